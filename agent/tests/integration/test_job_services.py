"""Job services with the real docker CLI: replicated-job and global-job run to completion."""


import pytest

from harness.cluster import SwarmNode, service_tasks, start_cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(lab, busybox):
    image, archive = busybox
    manager, _ = start_cluster(lab.add_hosts("m1", "w1"), archive, image=image)
    return image, manager


def replicas(node: SwarmNode, service: str) -> str:
    return node.docker("service", "ls", "--filter", f"name={service}", "--format", "{{.Replicas}}").stdout.strip()


def test_replicated_job_runs_to_completion(pair):
    image, manager = pair
    docker = manager.docker
    docker("service", "create", "--detach", "--name", "batch", "--mode", "replicated-job", "--replicas", "4",
           "--max-concurrent", "2", image, "sh", "-c", "sleep 2")
    wait_for("two of four running at first", lambda: replicas(manager, "batch") == "2/2 (0/4 completed)")
    wait_for("all four completed", lambda: replicas(manager, "batch") == "0/0 (4/4 completed)", timeout=90)
    tasks = service_tasks(manager, "batch")
    assert len(tasks) == 4 and {t["Status"]["State"] for t in tasks} == {"complete"}
    assert {t["DesiredState"] for t in tasks} == {"complete"} and {t["JobIteration"]["Index"] for t in tasks} == {0}
    rows = docker("service", "ps", "--format", "{{.DesiredState}} {{.CurrentState}}", "batch").stdout.splitlines()
    assert len(rows) == 4 and all(row.startswith("Complete Complete") for row in rows), rows
    status = manager.json("service", "inspect", "batch")[0]["JobStatus"]
    assert status["JobIteration"].get("Index", 0) == 0 and status["LastExecution"]  # the CLI omits a zero
    # Nothing restarts a completed job.
    docker("service", "ls")
    assert len(service_tasks(manager, "batch")) == 4
    # An update runs it again, as a new iteration.
    docker("service", "update", "--detach", "--env-add", "RUN=2", "batch")
    wait_for("the second iteration completed", lambda: replicas(manager, "batch") == "0/0 (4/4 completed)"
             and len(service_tasks(manager, "batch")) == 8, timeout=90)
    assert manager.json("service", "inspect", "batch")[0]["JobStatus"]["JobIteration"]["Index"] == 1


def test_failed_job_tasks_follow_the_restart_policy(pair):
    image, manager = pair
    manager.docker("service", "create", "--detach", "--name", "flaky", "--mode", "replicated-job",
                   "--restart-max-attempts", "1", "--restart-delay", "100ms", image, "sh", "-c", "exit 3")
    wait_for("the first run and one restart failed",
             lambda: [t["Status"]["State"] for t in service_tasks(manager, "flaky")] == ["failed", "failed"], timeout=60)
    errors = manager.docker("service", "ps", "--format", "{{.Error}}", "flaky").stdout
    assert "task: non-zero exit (3)" in errors
    assert replicas(manager, "flaky") == "0/1 (0/1 completed)"


def test_global_job_runs_once_on_every_node(pair):
    image, manager = pair
    manager.docker("service", "create", "--name", "everywhere", "--mode", "global-job", image, "true",
                   timeout=120)
    wait_for("one completed task per node", lambda: sorted(
        (t["NodeID"], t["Status"]["State"]) for t in service_tasks(manager, "everywhere")) and all(
        t["Status"]["State"] == "complete" for t in service_tasks(manager, "everywhere"))
        and len(service_tasks(manager, "everywhere")) == 2)
    assert replicas(manager, "everywhere") == "0/0 (2/2 completed)"
