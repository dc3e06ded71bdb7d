"""The walkthrough of a typical Swarm demo, typed as ``docker`` commands against a manager.

One manager and three workers, each a network namespace with its own Docker
engine and a real ``swarmd``; state in the manager's real etcd.
"""

import signal

import pytest

from harness.cluster import SwarmNode, running_tasks, spread, wait_for

pytestmark = pytest.mark.integration

WEB = ["httpd", "-f", "-p", "80", "-h", "/"]


@pytest.fixture
def cluster(lab, busybox):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "w1", "w2", "w3", engine_labels={"zone": "lab"})
    for host in hosts:
        host.load_image(archive)
    nodes = [SwarmNode(h) for h in hosts]
    for node in nodes:
        node.start()
    manager, workers = nodes[0], nodes[1:]
    manager.init()
    for worker in workers:
        worker.join(manager)
    wait_for(
        "all four nodes Ready",
        lambda: manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split().count("Ready") == 4,
    )
    return image, manager, workers


def test_walkthrough(cluster):
    image, manager, workers = cluster
    docker = manager.docker

    listing = docker("node", "ls").stdout
    assert "Leader" in listing and listing.count("Ready") == 4, listing
    assert docker("node", "inspect", "--format", "{{.Description.Engine.Labels.zone}}", "w1").stdout.strip() == "lab"

    # A global service: one task on every node.
    docker("service", "create", "--detach", "--name", "monitor", "--mode", "global", image, *WEB)
    wait_for("monitor on all 4 nodes", lambda: sorted(spread(manager, "monitor").values()) == [1, 1, 1, 1])

    # A replicated service with two replicas; `service create` waits for convergence by default.
    docker("service", "create", "--name", "web", "--replicas", "2", image, *WEB)
    assert len(running_tasks(manager, "web")) == 2
    services = docker("service", "ls", "--format", "{{.Name}} {{.Replicas}}").stdout
    assert "web 2/2" in services and "monitor 4/4" in services, services

    # Constrained to workers: three replicas, none on the manager.
    docker(
        "service", "create", "--detach", "--name", "crunch", "--replicas", "3",
        "--constraint", "node.role==worker", image, "sleep", "3600",
    )
    placed = wait_for("crunch 3 running", lambda: (s := spread(manager, "crunch")) and sum(s.values()) == 3 and s)
    assert "m1" not in placed, placed

    docker("service", "scale", "--detach", "crunch=1")
    wait_for("crunch scaled to 1", lambda: sum(spread(manager, "crunch").values()) == 1)

    docker("service", "rm", "monitor")
    wait_for("monitor containers stopped", lambda: not running_containers([manager, *workers], "monitor"))

    # A fourth service, then drain a worker holding some of it.
    docker("service", "create", "--detach", "--name", "app", "--replicas", "4", image, *WEB)
    wait_for("app 4 running", lambda: sum(spread(manager, "app").values()) == 4)
    before = spread(manager, "app")
    drained = max(before, key=before.get)
    docker("node", "update", "--availability", "drain", drained)
    after = wait_for(
        f"app off {drained}",
        lambda: (s := spread(manager, "app")) and drained not in s and sum(s.values()) == 4 and s,
    )
    assert "Drain" in docker("node", "ls").stdout
    docker("node", "update", "--availability", "active", drained)
    # Swarm does not rebalance on its own: nothing moves back.
    wait_for("node active again", lambda: "Drain" not in docker("node", "ls").stdout)
    assert spread(manager, "app") == after

    # Restarting an agent restarts none of its containers.
    worker = next(w for w in workers if w.name in after)
    containers = worker.container_ids()
    worker.kill(signal.SIGTERM)
    worker.start()
    wait_for(f"{worker.name} Ready again", lambda: node_state(manager, worker.name) == "ready")
    assert worker.container_ids() == containers

    # Kill a worker outright (agent and engine): it turns Down and its tasks run elsewhere.
    victim = next(w for w in workers if w.name in spread(manager, "app"))
    victim.kill()
    victim.host.stop_engine(signal.SIGKILL)
    wait_for(f"{victim.name} Down", lambda: node_state(manager, victim.name) == "down", timeout=40)
    wait_for(
        f"app rescheduled off {victim.name}",
        lambda: (s := spread(manager, "app")) and victim.name not in s and sum(s.values()) == 4,
        timeout=60,
    )


def node_state(manager: SwarmNode, name: str) -> str:
    return manager.docker("node", "inspect", "--format", "{{.Status.State}}", name).stdout.strip()


def running_containers(nodes: list[SwarmNode], service: str) -> list[str]:
    """Containers of ``service`` still running on any node, asked of the engines themselves."""
    found = []
    for node in nodes:
        found += node.host.docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
        ).stdout.split()
    return found
