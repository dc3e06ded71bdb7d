"""Three managers: kill the leader, another takes over, writes still work, nothing written before is lost."""

import json

import pytest

from harness.cluster import SwarmNode, wait_for

pytestmark = pytest.mark.integration


def leader_of(node: SwarmNode) -> str:
    out = node.docker("node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}", check=False).stdout
    return next((line.split()[0] for line in out.splitlines() if line.endswith("Leader")), "")


def test_leader_failover(lab, busybox):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "m2", "m3")
    nodes = [SwarmNode(h) for h in hosts]
    for host, node in zip(hosts, nodes):
        host.load_image(archive)
        node.start()
    first = nodes[0]
    first.init()
    for node in nodes[1:]:
        node.join(first, role="manager")
    wait_for("three reachable managers", lambda: first.docker(
        "node", "ls", "--format", "{{.ManagerStatus}}").stdout.split().count("Reachable") == 2)

    first.docker("service", "create", "--detach", "--name", "before", "--replicas", "3", image, "sleep", "3600")
    wait_for("before running", lambda: first.docker(
        "service", "ls", "--format", "{{.Replicas}}", "--filter", "name=before").stdout.strip() == "3/3")

    leader = next(n for n in nodes if n.name == leader_of(first))
    survivors = [n for n in nodes if n is not leader]
    leader.kill()  # the agent only: its etcd member stays, as when swarmd crashes

    new_leader = wait_for("a new leader", lambda: (l := leader_of(survivors[0])) and l != leader.name and l, timeout=30)
    assert new_leader in {n.name for n in survivors}
    wait_for(f"{leader.name} Unreachable", lambda: f"{leader.name} Unreachable" in survivors[0].docker(
        "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}").stdout, timeout=15)

    spec = json.loads(survivors[1].docker("service", "inspect", "before").stdout)[0]["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 3
    survivors[1].docker("service", "create", "--detach", "--name", "after", image, "sleep", "3600")
    wait_for("after running", lambda: survivors[0].docker(
        "service", "ls", "--format", "{{.Replicas}}", "--filter", "name=after").stdout.strip() == "1/1")
    names = survivors[0].docker("service", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(names) == ["after", "before"]


def test_promote_and_demote(lab, busybox):
    _, archive = busybox
    hosts = lab.add_hosts("m1", "w1")
    manager, worker = (SwarmNode(h) for h in hosts)
    for node in (manager, worker):
        node.start()
    manager.init()
    worker.join(manager)

    manager.docker("node", "promote", "w1")
    wait_for("w1 reachable as a manager", lambda: manager.docker(
        "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}").stdout.count("Reachable") == 1, timeout=60)
    # The promoted node now serves the cluster itself.
    assert "m1" in worker.docker("node", "ls").stdout
    assert worker.docker("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() == "true"

    manager.docker("node", "demote", "w1")
    wait_for("w1 a worker again", lambda: worker.docker(
        "info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() == "false", timeout=60)
    refused = worker.docker("node", "ls", check=False)
    assert refused.returncode != 0 and "Worker nodes can't be used" in refused.stderr
    wait_for("w1 Ready as a worker", lambda: manager.docker(
        "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").stdout.split("\n")[1].split()
        == ["w1", "Ready"], timeout=30)


def test_join_tokens(lab):
    hosts = lab.add_hosts("m1", "w1", "w2", engine=True)
    manager, first, second = (SwarmNode(h) for h in hosts)
    for node in (manager, first, second):
        node.start()
    manager.init()
    old = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
    manager.docker("swarm", "join-token", "--rotate", "worker")
    new = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
    assert new != old and new.split("-")[2] == old.split("-")[2], "rotation keeps the CA digest"

    refused = first.docker("swarm", "join", "--token", old, manager.addr, check=False)
    assert refused.returncode != 0 and "invalid join token" in refused.stderr, refused.stderr

    # A token for another CA: refused before anything but the CA request is sent.
    digest = old.split("-")[2]
    foreign = old.replace(digest, ("1" if digest[0] != "1" else "2") + digest[1:])
    refused = first.docker("swarm", "join", "--token", foreign, manager.addr, check=False)
    assert refused.returncode != 0 and "does not match the join token" in refused.stderr, refused.stderr
    assert "joined" not in manager.host.logs("swarmd")

    first.docker("swarm", "join", "--token", new, manager.addr)
    assert first.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "active"
    # Rotating leaves joined nodes alone.
    manager.docker("swarm", "join-token", "--rotate", "worker")
    wait_for("w1 Ready", lambda: "Ready" in manager.docker("node", "inspect", "--format", "{{.Status.State}}", "w1").stdout
             or manager.docker("node", "inspect", "--format", "{{.Status.State}}", "w1").stdout.strip() == "ready")

    first.docker("swarm", "leave")
    assert first.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"
    wait_for("w1 Down after leaving", lambda: manager.docker(
        "node", "inspect", "--format", "{{.Status.State}}", "w1").stdout.strip() == "down", timeout=30)
    manager.docker("node", "rm", "w1")
    assert "w1" not in manager.docker("node", "ls").stdout
