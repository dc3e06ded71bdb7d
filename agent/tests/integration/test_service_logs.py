"""``docker service logs``: the tasks' output gathered from the workers that run them, through the manager."""

import http.client
import json
import re
import subprocess
import sys
import time

import docker
import pytest

from harness.cluster import SwarmNode, running_tasks, start_cluster, wait_for
from harness.hosts import DOCKER_CLI
from swarm_agent import pki

pytestmark = pytest.mark.integration

# Each task says who it is once on stderr, then twice on stdout, then waits. The engine stamps each stream's
# lines as it reads them from its own pipe: the pause puts the stderr line first in time for sure.
SCRIPT = "echo oops $(hostname) >&2; sleep 1; echo first $(hostname); echo second $(hostname); exec sleep 3600"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"


@pytest.fixture
def logs_cluster(lab, busybox):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "w1", "w2")
    # The manager drained: one task on each worker.
    nodes = start_cluster(hosts, archive, drain_manager=True)
    manager = nodes[0]
    manager.docker("service", "create", "-d", "--name", "logs", "--replicas", "2", image, "sh", "-c", SCRIPT)
    tasks = wait_for("2 running tasks", lambda: len(t := running_tasks(manager, "logs")) == 2 and t)
    # The task's container is named after it; its hostname is the container's short ID.
    hostnames = {}
    for task in tasks:
        host = next(n.host for n in nodes if n.node_id == task["NodeID"])
        container = f"{task['Name']}.{task['ID']}"
        hostnames[task["ID"]] = host.docker("inspect", "--format", "{{.Config.Hostname}}", container).stdout.decode().strip()
    wait_for("both tasks wrote their lines",
             lambda: manager.docker("service", "logs", "logs").stdout.count("second") == 2)
    return manager, nodes, tasks, hostnames


def prefix(task: dict, nodes: list[SwarmNode]) -> str:
    """The CLI's prefix for a task's lines: SERVICE.SLOT.TASKID@NODE, padded, then '|'."""
    node = next(n for n in nodes if n.node_id == task["NodeID"])
    return rf"logs\.{task['Slot']}\.{task['ID'][:12]}@{node.name}\s+\| "


def agent_status(node: SwarmNode) -> dict:
    done = subprocess.run([sys.executable, "-m", "swarm_agent.cli.swarmctl", "-H", f"unix://{node.socket}",
                           "--json", "status"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_service_and_task_logs(logs_cluster):
    manager, nodes, tasks, hostnames = logs_cluster
    out = manager.docker("service", "logs", "logs")
    for task in tasks:
        name = hostnames[task["ID"]]
        lines = [line for line in out.stdout.splitlines() if line.endswith(name)]
        assert len(lines) == 2, out.stdout
        assert re.fullmatch(prefix(task, nodes) + f"first {name}", lines[0]), lines
        assert re.fullmatch(prefix(task, nodes) + f"second {name}", lines[1]), lines
        assert re.search("^" + prefix(task, nodes) + f"oops {name}$", out.stderr, re.M), out.stderr

    # --tail counts the lines of both streams together, per task.
    tail = manager.docker("service", "logs", "--tail", "1", "logs")
    assert sorted(re.findall(r"second (\w+)", tail.stdout)) == sorted(hostnames.values()), tail.stdout
    assert "first" not in tail.stdout and tail.stderr == "", tail
    tail2 = manager.docker("service", "logs", "--tail", "2", "logs")
    assert tail2.stdout.count("first") == 2 and tail2.stdout.count("second") == 2 and tail2.stderr == "", tail2
    tail3 = manager.docker("service", "logs", "--tail", "3", "logs")
    assert tail3.stderr.count("oops") == 2, tail3

    stamped = manager.docker("service", "logs", "--timestamps", "logs")
    for line in stamped.stdout.splitlines():
        assert re.fullmatch(STAMP + r" logs\.\d\.\w{12}@w\d\s+\| (first|second) \w+", line), line

    # Since the future: nothing; since the start: everything.
    assert manager.docker("service", "logs", "--since", "2099-01-01T00:00:00Z", "logs").stdout == ""
    assert manager.docker("service", "logs", "--since", "1h", "logs").stdout.count("first") == 2

    # A task's logs alone, by its ID, as the CLI finds it (it asks for a service first).
    one = tasks[0]
    only = manager.docker("service", "logs", one["ID"])
    assert [line.rsplit(" ", 1)[1] for line in only.stdout.splitlines()] == [hostnames[one["ID"]]] * 2, only.stdout

    raw = manager.docker("service", "logs", "--raw", "--no-task-ids", "logs")
    assert sorted(raw.stdout.splitlines()) == sorted(f"{w} {h}" for h in hostnames.values()
                                                     for w in ("first", "second")), raw.stdout

    missing = manager.docker("service", "logs", "nosuch", check=False)
    assert missing.returncode != 0 and "no such task or service: nosuch" in missing.stderr, missing.stderr
    status, answer = manager.api("GET", "/services/logs/logs?tail=x&stdout=1")
    assert status == 400 and "tail" in answer["message"], answer
    status, answer = manager.api("GET", "/services/logs/logs")
    assert status == 400 and "at least one stream" in answer["message"], answer


def test_follow_picks_up_new_lines_and_ends_with_the_client(logs_cluster):
    manager, nodes, tasks, hostnames = logs_cluster
    cli = subprocess.Popen([DOCKER_CLI, "-H", f"unix://{manager.socket}", "service", "logs", "-f", "logs"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60

        def read_until(text: str) -> None:
            assert cli.stdout is not None
            while not any(text in line for line in seen):
                assert time.monotonic() < deadline, f"no line with {text!r} within 60 s; seen {seen}"
                line = cli.stdout.readline()
                assert line, f"the stream ended; seen {seen}"
                seen.append(line)

        read_until(f"second {hostnames[tasks[1]['ID']]}")
        read_until(f"second {hostnames[tasks[0]['ID']]}")
        wait_for("the workers to publish", lambda: all(agent_status(n)["log_streams"] == 1 for n in nodes[1:]))
        # A line written after the call began, by a process in the first task's container.
        task = tasks[0]
        host = next(n.host for n in nodes if n.node_id == task["NodeID"])
        host.docker("exec", f"{task['Name']}.{task['ID']}", "sh", "-c", "echo late line > /proc/1/fd/1")
        read_until("late line")
        assert re.fullmatch(prefix(task, nodes) + "late line", seen[-1].rstrip("\n")), seen[-1]
        assert cli.poll() is None, "a followed stream ended on its own"
    finally:
        cli.kill()
        cli.wait()
    # The client gone, the subscription goes, and the workers stop reading.
    wait_for("the subscription to be gone", lambda: agent_status(manager)["log_subscriptions"] == 0, timeout=30)
    wait_for("the workers to stop publishing", lambda: all(agent_status(n)["log_streams"] == 0 for n in nodes[1:]),
             timeout=30)


def test_a_worker_publishes_only_its_own_tasks(logs_cluster):
    manager, nodes, tasks, _ = logs_cluster
    w1 = next(n for n in nodes if n.name == "w1")
    other = next(t for t in tasks if t["NodeID"] != w1.node_id)
    certs = pki.NodeCerts.load(w1.data_dir)
    assert certs is not None
    context = pki.client_context(certs.ca_pem, certs.cert_pem, certs.key_pem)
    body = {"SubscriptionID": "x", "Close": True, "Messages": [{
        "Context": {"TaskID": other["ID"]}, "Timestamp": "2026-01-01T00:00:00.000000000Z", "Stream": "stdout",
        "Data": "aGk=",
    }]}
    conn = http.client.HTTPSConnection(manager.host.ip, 2377, context=context, timeout=10)
    try:
        conn.request("POST", "/swarmd/logs/x", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 403, answer
    assert answer["message"] == (f"Messages.0.Context.TaskID: task {other['ID']} is not assigned to node {w1.node_id}")


def test_sdk_service_logs(logs_cluster):
    manager, _, _, hostnames = logs_cluster
    client = docker.DockerClient(base_url=f"unix://{manager.socket}", version="1.41")
    try:
        service = client.services.get("logs")
        out = b"".join(service.logs(stdout=True, stderr=False)).decode()
        assert sorted(out.splitlines()) == sorted(f"{w} {h}" for h in hostnames.values() for w in ("first", "second"))
    finally:
        client.close()


def test_a_node_that_is_down_is_skipped_with_a_warning(logs_cluster):
    manager, nodes, tasks, hostnames = logs_cluster
    w1 = next(n for n in nodes if n.name == "w1")
    w1.kill()  # the agent only: its containers and their logs stay, unreachable
    wait_for("w1 Down", lambda: manager.docker("node", "inspect", "--format", "{{.Status.State}}", "w1").stdout.strip()
             == "down", timeout=60)
    out = manager.docker("service", "logs", "logs", check=False)
    assert out.returncode != 0, out
    assert f"warning: incomplete log stream. some logs could not be retrieved for the following reasons: " \
           f"node {w1.node_id} is not available" in out.stderr, out.stderr
    kept = next(t for t in tasks if t["NodeID"] != w1.node_id)
    assert f"second {hostnames[kept['ID']]}" in out.stdout, out.stdout
