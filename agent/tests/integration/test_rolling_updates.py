"""Rolling updates, failure actions, rollback and health checks, driven with the real docker CLI.

Two lab hosts (a manager and a worker), each with its own Docker engine and a real swarmd.
The second image is the test image under another tag, so an update changes the image.
"""


import pytest

from harness.cluster import SwarmNode, go_time, service_tasks, start_cluster, wait_for

pytestmark = pytest.mark.integration

WEB = ["httpd", "-f", "-p", "80", "-h", "/"]
NEW_IMAGE = "local/busybox:2"


@pytest.fixture
def pair(lab, busybox):
    image, archive = busybox
    manager, _ = start_cluster(lab.add_hosts("m1", "w1"), archive, image=image, tags=(NEW_IMAGE,))
    return image, manager


def update_state(node: SwarmNode, service: str) -> str:
    return node.docker("service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                       service).stdout.strip()


def test_rolling_update_replaces_one_task_at_a_time(pair):
    image, manager = pair
    docker = manager.docker
    docker("service", "create", "--name", "web", "--replicas", "4", "--update-parallelism", "1",
           "--update-delay", "2s", "--update-monitor", "1s", image, *WEB)
    # Without --detach the CLI follows the update to its end through UpdateStatus and the tasks.
    docker("service", "update", "--image", NEW_IMAGE, "web", timeout=180)
    # The CLI stops following once the tasks have been stable for the monitor period; the manager records
    # "completed" when the last task's monitor ends, which may come a moment later.
    wait_for("the update completed", lambda: update_state(manager, "web") == "completed", timeout=30)
    history = docker("service", "ps", "--format", "{{.Name}} {{.Image}} {{.DesiredState}} {{.CurrentState}}",
                     "web").stdout.splitlines()
    old = [line for line in history if f" {image} " in line]
    new = [line for line in history if f" {NEW_IMAGE} " in line]
    assert len(old) == 4 and all(" Shutdown Shutdown " in line for line in old), history
    assert len(new) == 4 and all(" Running Running " in line for line in new), history
    # One at a time: each new task was created only once the one before it had run for the delay,
    # and its slot's old task was told to stop in the same step, not before.
    fresh = sorted((t for t in service_tasks(manager, "web") if t["Spec"]["ContainerSpec"]["Image"] == NEW_IMAGE),
                   key=lambda t: go_time(t["CreatedAt"]))
    for earlier, later in zip(fresh, fresh[1:]):
        assert go_time(later["CreatedAt"]) >= go_time(earlier["Status"]["Timestamp"]) + 2, (earlier, later)
    pretty = docker("service", "inspect", "--pretty", "web").stdout
    assert "UpdateStatus:" in pretty and "State:\t\tcompleted" in pretty and "update completed" in pretty, pretty


def health_test(task_spec: dict) -> list[str]:
    # The CLI re-encodes a service with Go's field name; `inspect --type task` shows the API's JSON.
    container = task_spec["ContainerSpec"]
    return (container.get("Healthcheck") or container["HealthCheck"])["Test"]


def unhealthy_update(manager: SwarmNode, action: str) -> None:
    manager.docker("service", "update", "--detach", "--health-cmd", "false", "--health-interval", "1s",
                   "--health-retries", "1", "--update-failure-action", action, "--update-monitor", "30s", "web")


def healthy_web(manager: SwarmNode, image: str) -> None:
    manager.docker("service", "create", "--name", "web", "--replicas", "3", "--health-cmd", "true",
                   "--stop-grace-period", "1s",
                   "--health-interval", "1s", "--rollback-monitor", "2s", image, *WEB)


def test_failing_health_check_rolls_back_by_itself(pair):
    image, manager = pair
    healthy_web(manager, image)
    unhealthy_update(manager, "rollback")
    wait_for("the automatic rollback to complete", lambda: update_state(manager, "web") == "rollback_completed",
             timeout=120)
    spec = manager.json("service", "inspect", "web")[0]["Spec"]
    assert health_test(spec["TaskTemplate"]) == ["CMD-SHELL", "true"]
    message = manager.docker("service", "inspect", "--format", "{{.UpdateStatus.Message}}", "web").stdout
    assert "rollback completed" in message
    wait_for("three healthy tasks of the old spec running", lambda: sorted(
        health_test(t["Spec"])[1] for t in service_tasks(manager, "web")
        if t["DesiredState"] == "running" and t["Status"]["State"] == "running") == ["true"] * 3)
    failed = [t for t in service_tasks(manager, "web") if t["Status"]["State"] == "failed"]
    assert failed and all(t["Status"]["Err"] == "dockerexec: unhealthy container" for t in failed), failed


def test_failing_health_check_pauses_and_says_which_task_and_why(pair):
    image, manager = pair
    healthy_web(manager, image)
    unhealthy_update(manager, "pause")
    wait_for("the update to pause", lambda: update_state(manager, "web") == "paused", timeout=120)
    pretty = manager.docker("service", "inspect", "--pretty", "web").stdout
    failed = [t for t in service_tasks(manager, "web") if t["Status"]["State"] == "failed"]
    named = [t["ID"] for t in failed if t["ID"] in pretty]
    assert len(named) == 1, pretty
    assert "State:\t\tpaused" in pretty, pretty
    assert (f"update paused due to failure or early termination of task {named[0]}: "
            "dockerexec: unhealthy container") in pretty, pretty
    # `service ps` shows the failure too.
    errors = manager.docker("service", "ps", "--no-trunc", "--format", "{{.Error}}", "web").stdout
    assert "dockerexec: unhealthy container" in errors
    # The next update resumes it; a healthy spec completes.
    manager.docker("service", "update", "--detach", "--health-cmd", "true", "web")
    wait_for("the resumed update to complete", lambda: update_state(manager, "web") == "completed", timeout=120)


def test_manual_rollback_and_force_update(pair):
    image, manager = pair
    docker = manager.docker
    docker("service", "create", "--name", "web", "--replicas", "2", "--update-monitor", "1s",
           "--rollback-monitor", "1s", image, *WEB)
    docker("service", "update", "--image", NEW_IMAGE, "web", timeout=120)
    before = {t["ID"] for t in service_tasks(manager, "web") if t["DesiredState"] == "running"}
    docker("service", "update", "--detach", "--force", "web")
    wait_for("--force to re-create every task", lambda: update_state(manager, "web") == "completed" and not before
             & {t["ID"] for t in service_tasks(manager, "web") if t["DesiredState"] == "running"}, timeout=120)
    spec = manager.json("service", "inspect", "web")[0]["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == NEW_IMAGE and spec["TaskTemplate"]["ForceUpdate"] == 1
    docker("service", "rollback", "--detach", "web")
    assert update_state(manager, "web") in ("rollback_started", "rollback_completed")
    wait_for("the rollback to complete", lambda: update_state(manager, "web") == "rollback_completed", timeout=120)
    running = [t for t in service_tasks(manager, "web") if t["DesiredState"] == "running"]
    assert len(running) == 2 and {t["Spec"]["ForceUpdate"] for t in running} == {0}


def test_slow_starter_is_not_killed_and_unhealthy_task_is_replaced(pair):
    image, manager = pair
    docker = manager.docker
    # Its first health checks fail (no /tmp/ready yet), but within its 20 s start period.
    docker("service", "create", "--detach", "--name", "slow", "--health-cmd", "test -f /tmp/ready",
           "--health-interval", "1s", "--health-retries", "1", "--health-start-period", "20s",
           image, "sh", "-c", "sleep 6; touch /tmp/ready; exec httpd -f -p 80 -h /")
    wait_for("the slow starter shown as starting",
             lambda: "Starting" in docker("service", "ps", "--format", "{{.CurrentState}}", "slow").stdout)
    wait_for("the slow starter running", lambda: [t["Status"]["State"] for t in service_tasks(manager, "slow")]
             == ["running"], timeout=60)
    assert len(service_tasks(manager, "slow")) == 1  # never failed, never replaced
    # Out of its start period, a failing check fails the task and the restart policy replaces it.
    docker("service", "create", "--detach", "--name", "sick", "--health-cmd", "false", "--health-interval", "1s",
           "--health-retries", "1", "--restart-delay", "1s", image, *WEB)
    wait_for("the unhealthy task failed and replaced", lambda: len(service_tasks(manager, "sick")) >= 2, timeout=60)
    rows = docker("service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}", "sick").stdout
    assert "Failed" in rows and "dockerexec: unhealthy container" in rows, rows
