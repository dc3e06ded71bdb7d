"""Task life on one node: restart policies, a task that fits nowhere, and a manager leaving."""

import pytest

from harness.cluster import SwarmNode, go_time, service_tasks, start_agent, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def single(lab, busybox):
    image, archive = busybox
    node = start_agent(lab.add_host("m1"), archive)
    node.init()
    return image, node


def task_states(node: SwarmNode, service: str) -> list[str]:
    return sorted(t["Status"]["State"] for t in service_tasks(node, service))


def test_restart_policies(single):
    image, node = single
    node.docker("service", "create", "-d", "--name", "once", "--restart-condition", "none",
                image, "sh", "-c", "exit 3")
    node.docker("service", "create", "-d", "--name", "twice", "--restart-condition", "on-failure",
                "--restart-max-attempts", "2", "--restart-delay", "100ms", image, "sh", "-c", "exit 4")
    node.docker("service", "create", "-d", "--name", "done", "--restart-condition", "on-failure",
                image, "true")
    wait_for("once failed, not restarted", lambda: task_states(node, "once") == ["failed"])
    wait_for("twice failed three times", lambda: task_states(node, "twice") == ["failed"] * 3, timeout=60)
    wait_for("done completed", lambda: task_states(node, "done") == ["complete"])
    errors = node.docker("service", "ps", "--format", "{{.Error}}", "twice").stdout
    assert "task: non-zero exit (4)" in errors, errors
    # Nothing more happens afterwards: the policies are spent.
    node.docker("service", "ls")
    assert task_states(node, "twice") == ["failed"] * 3 and task_states(node, "once") == ["failed"]


def test_a_task_that_fits_nowhere_says_why(single):
    image, node = single
    node.docker("service", "create", "-d", "--name", "ssd", "--constraint", "node.labels.storage==ssd",
                image, "sleep", "3600")
    reason = wait_for("the pending reason", lambda: (out := node.docker(
        "service", "ps", "--no-trunc", "--format", "{{.CurrentState}} {{.Error}}", "ssd").stdout.strip())
        .startswith("Pending") and out)
    assert "no suitable node (scheduling constraints not satisfied on 1 node)" in reason
    node.docker("node", "update", "--label-add", "storage=ssd", "m1")
    wait_for("placed once a node has the label", lambda: "Running" in node.docker(
        "service", "ps", "--format", "{{.CurrentState}}", "ssd").stdout)


def test_manager_leave_needs_force(single):
    _, node = single
    refused = node.docker("swarm", "leave", check=False)
    assert refused.returncode != 0 and "Use `--force` to suppress this message" in refused.stderr
    node.docker("swarm", "leave", "--force")
    assert node.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"
    # A signing CA needs its key too: refused before anything is created.
    status, answer = node.api("POST", "/swarm/init", {"Spec": {"CAConfig": {"SigningCACert": "x"}}})
    assert status == 400 and "SigningCACert and SigningCAKey must be given together" in answer["message"], answer
    assert node.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"
    # The node can start a new swarm afterwards.
    node.docker("swarm", "init", "--advertise-addr", node.host.ip)
    assert "Leader" in node.docker("node", "ls").stdout



def test_restart_window_and_delay(single):
    image, node = single
    # Max attempts count only within the window: runs longer than the window keep being restarted,
    # where fast failures would have been given up after one restart.
    node.docker("service", "create", "-d", "--name", "windowed", "--restart-condition", "on-failure",
                "--restart-max-attempts", "1", "--restart-window", "2s", "--restart-delay", "100ms",
                image, "sh", "-c", "sleep 3; exit 5")
    # Condition any restarts even a task that completed, after the delay.
    node.docker("service", "create", "-d", "--name", "again", "--restart-condition", "any",
                "--restart-delay", "3s", image, "true")
    wait_for("three failures of the windowed service", lambda: task_states(node, "windowed").count("failed") >= 3,
             timeout=90)
    wait_for("the completed task restarted twice", lambda: task_states(node, "again").count("complete") >= 3,
             timeout=60)
    ended = sorted((t for t in service_tasks(node, "again") if t["Status"]["State"] == "complete"),
                   key=lambda t: go_time(t["CreatedAt"]))
    for before, after in zip(ended, ended[1:]):
        # The engine's own times: the next container started only once the delay had passed.
        finished = node.host.docker("inspect", "--format", "{{.State.FinishedAt}}", container_of(before)).stdout.decode()
        started = node.host.docker("inspect", "--format", "{{.State.StartedAt}}", container_of(after)).stdout.decode()
        assert go_time(started) >= go_time(finished) + 3, (before, after)


def container_of(task: dict) -> str:
    return f"{task['Name']}.{task['ID']}"  # as the executor names it


def test_a_task_in_its_stop_grace_period_does_not_hold_back_new_ones(single):
    """A container that ignores SIGTERM takes its whole grace period to stop; tasks assigned meanwhile (the
    replacements of a dead node's tasks, say) start without waiting for it."""
    image, node = single
    node.docker("service", "create", "-d", "--name", "stubborn", "--stop-grace-period", "2m",
                image, "sh", "-c", "trap '' TERM; while true; do sleep 1; done")
    wait_for("stubborn running", lambda: task_states(node, "stubborn") == ["running"])
    node.docker("service", "rm", "stubborn")
    node.docker("service", "create", "-d", "--name", "fresh", image, "sleep", "3600")
    wait_for("fresh running", lambda: task_states(node, "fresh") == ["running"], timeout=60)
    still = node.host.docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=stubborn").stdout
    assert still.strip(), "fresh ran only once the stubborn container was gone"
