"""Hollow nodes against a real manager: 20 simulated workers join over TLS and run a service."""

from __future__ import annotations

import json

import pytest

from harness.cluster import SwarmNode, agent_log, wait_for
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


def test_hollow_nodes_renew_their_certificates_and_follow_a_root_rotation(lab):
    """Hollow nodes renew as real agents do (the same code): on their window's schedule, and at once when the
    managers' root changes, so that ``docker swarm ca --rotate`` completes with them in the swarm."""
    manager = SwarmNode(lab.add_host("m1"))
    fleet_host = lab.add_host("hollow", engine=False)
    manager.start()
    manager.init("--cert-expiry", "1h")
    # 1-hour certificates renewed between 0.1 % and 0.2 % of their lifetime: every 4 to 7 s.
    fleet = start_hollow(fleet_host, manager, 3, renew_window="0.001:0.002", log_level="INFO")
    wait_for("4 nodes ready", lambda: fleet.poll() is None and ready_nodes(manager) == 4, timeout=90)
    wait_for("each hollow node renewed twice", lambda: all(
        agent_log(manager).count(f"issued a worker certificate to node {node_id}") >= 2
        for node_id in manager.docker("node", "ls", "-q", "--filter", "role=worker").stdout.split()), timeout=60)

    before = manager.docker("swarm", "ca").stdout.strip()
    manager.docker("swarm", "ca", "--rotate", "--quiet", timeout=180)
    after = manager.docker("swarm", "ca").stdout.strip()
    assert after != before
    status, swarm = manager.api("GET", "/swarm")
    assert status == 200, swarm
    for node_id in manager.docker("node", "ls", "-q", "--filter", "role=worker").stdout.split():
        tls = json.loads(manager.docker("node", "inspect", "--format", "{{json .Description.TLSInfo}}",
                                        node_id).stdout)
        assert tls["CertIssuerPublicKey"] == swarm["TLSInfo"]["CertIssuerPublicKey"], f"{node_id} is on the old root"
    assert ready_nodes(manager) == 4 and fleet.poll() is None, fleet_host.logs("hollow")
