"""Hollow nodes against a real manager: 20 simulated workers join over TLS and run a service."""

from __future__ import annotations

import pytest

from harness.cluster import SwarmNode, wait_for
from harness.hollow import ready_nodes, start_hollow

pytestmark = pytest.mark.integration

HOLLOW = 20
REPLICAS = 40


def test_twenty_hollow_nodes_join_and_run_a_service(lab, busybox):
    image, archive = busybox
    manager_host = lab.add_host("m1")
    fleet_host = lab.add_host("hollow", engine=False)
    manager_host.load_image(archive)
    manager = SwarmNode(manager_host)
    manager.start()
    manager.init()
    # Drained, so every task lands on a hollow node.
    manager.docker("node", "update", "--availability", "drain", manager.node_id)

    fleet = start_hollow(fleet_host, manager, HOLLOW, start_delay="0.3s")
    wait_for(f"{HOLLOW + 1} nodes ready", lambda: fleet.poll() is None and ready_nodes(manager) == HOLLOW + 1,
             timeout=90)
    listed = manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}").stdout
    lines = listed.splitlines()
    assert len(lines) == HOLLOW + 1
    assert sum(1 for line in lines if line.startswith("hollow-") and line.endswith("Ready Active")) == HOLLOW

    manager.docker("service", "create", "--detach", "--name", "web", "--replicas", str(REPLICAS),
                   image, "sleep", "3600")

    def running_nodes() -> set[str] | None:
        out = manager.docker("service", "ps", "web", "--filter", "desired-state=running",
                             "--format", "{{.Node}} {{.CurrentState}}").stdout.splitlines()
        if len(out) != REPLICAS or not all(line.split(maxsplit=1)[1].startswith("Running") for line in out):
            return None
        return {line.split()[0] for line in out}

    nodes = wait_for(f"{REPLICAS} replicas running", running_nodes, timeout=90, interval=0.5)
    # Spread: 40 replicas over 20 equal nodes land on every one of them.
    assert len(nodes) == HOLLOW and all(name.startswith("hollow-") for name in nodes)
    assert fleet.poll() is None, fleet_host.logs("hollow")
    # Hollow processes print nothing, but every hollow node answers a log request: the stream ends, empty.
    logs = manager.docker("service", "logs", "web", timeout=60)
    assert logs.stdout == "" and logs.stderr == "", logs
