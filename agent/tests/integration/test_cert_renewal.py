"""Certificates renew themselves: nodes of a swarm with 1 h certificates take new ones and keep working.

The agents run with ``--cert-renew-window 0.001:0.002``: the same renewal code as in production, which
renews a 1 h certificate 3.6 to 7.2 s into its life instead of 30 to 48 min, so the test sees renewals in
seconds.
"""

import socket

import pytest

from harness.cluster import SwarmNode, agent_log, form_swarm, running_tasks, wait_for
from swarm_agent import pki

pytestmark = pytest.mark.integration

WINDOW = ("--cert-renew-window", "0.001:0.002")


def disk(node: SwarmNode) -> pki.Identity:
    """The identity in the node's certificate on disk (read again if a renewal was writing it)."""
    certs = wait_for(f"{node.name}'s certificates on disk", lambda: pki.NodeCerts.load(node.data_dir), timeout=10)
    return certs.identity


def served(manager: SwarmNode) -> pki.Identity:
    """The identity the manager's TLS listener presents to a new connection."""
    ca = (manager.data_dir / "certificates" / "swarm-root-ca.crt").read_bytes()
    host, port = manager.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pki.client_context(ca).wrap_socket(raw) as tls:
            identity = pki.peer_identity(tls)
    assert identity is not None
    return identity


def lifetime_hours(identity: pki.Identity) -> float:
    # Certificates start 5 minutes in the past for nodes whose clocks lag.
    return round((identity.not_after - identity.not_before).total_seconds() / 3600 - 5 / 60, 3)


def task_containers(node: SwarmNode) -> set[str]:
    return set(node.host.docker("ps", "-q", "--no-trunc", "--filter", "label=com.docker.swarm.task.id").stdout.split())


def test_nodes_renew_their_certificates_and_keep_working(lab, busybox):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "w1")
    for host in hosts:
        host.load_image(archive)
    manager, worker = nodes = form_swarm(hosts, *WINDOW, init=("--cert-expiry", "1h"))
    assert lifetime_hours(disk(manager)) == lifetime_hours(disk(worker)) == 1.0

    manager.docker("service", "create", "--detach", "--name", "keep", "--mode", "global", image, "sleep", "100000")
    wait_for("a task running on each node", lambda: len(running_tasks(manager, "keep")) == 2)
    containers = {node.name: task_containers(node) for node in nodes}
    assert all(len(c) == 1 for c in containers.values()), containers

    # Two renewals on each node: serials change on disk, the key with them.
    for node in nodes:
        seen = [disk(node).serial]

        def renewed_twice(node: SwarmNode = node, seen: list[int] = seen) -> bool:
            serial = disk(node).serial
            if serial != seen[-1]:
                seen.append(serial)
            return len(seen) >= 3

        wait_for(f"{node.name} to renew its certificate twice", renewed_twice, timeout=90)
    assert "renewed its manager certificate" in agent_log(manager)
    assert "renewed its worker certificate" in agent_log(worker)
    # The manager's listener presents the renewed certificate to new connections, without a restart.
    wait_for("the manager to serve its current certificate", lambda: served(manager).serial == disk(manager).serial)
    assert served(manager).node_id == manager.node_id

    # Nothing restarted: the same containers, the nodes Ready, and the cluster still takes work.
    assert {node.name: task_containers(node) for node in nodes} == containers
    assert manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split() == ["Ready", "Ready"]
    manager.docker("service", "create", "--detach", "--name", "more", "--replicas", "2", image, "sleep", "100000")
    wait_for("the new service's 2 tasks running", lambda: len(running_tasks(manager, "more")) == 2)

    # New sessions present the renewed certificate: the manager's agent restarts, the worker reconnects.
    joined_serial = int(agent_log(manager).split(f"node {worker.node_id} opened a session")[1]
                        .split("certificate serial ")[1].split(")")[0], 16)
    manager.kill()
    manager.start(*WINDOW)

    def session_serial() -> int | None:
        line = agent_log(manager).rsplit(f"node {worker.node_id} opened a session", 1)[1]
        return int(line.split("certificate serial ")[1].split(")")[0], 16) if "serial" in line else None

    wait_for("the worker's new session", lambda: session_serial() not in (None, joined_serial), timeout=60)
    assert all(containers[node.name] <= task_containers(node) for node in nodes)

    # A new expiry applies to certificates issued from then on, renewals included.
    too_short = manager.docker("swarm", "update", "--cert-expiry", "30m", check=False)
    assert too_short.returncode != 0 and "NodeCertExpiry" in too_short.stderr, too_short.stderr
    manager.docker("swarm", "update", "--cert-expiry", "2h")
    wait_for("the worker's next certificate to last 2 h", lambda: lifetime_hours(disk(worker)) == 2.0, timeout=60)
    trust_root = manager.docker("swarm", "ca").stdout.strip()
    assert trust_root == (manager.data_dir / "certificates" / "swarm-root-ca.crt").read_text().strip()


def test_renewal_with_no_manager_reachable_retries_and_then_succeeds(lab):
    manager, worker = form_swarm(lab.add_hosts("m1", "w1"), *WINDOW, init=("--cert-expiry", "1h"))
    manager.kill()
    failed = "certificate renewal failed; trying again"
    wait_for("a failed renewal", lambda: failed in agent_log(worker), timeout=60)
    # Read after the first failure: a renewal due before the kill may have completed on a slow machine.
    before = disk(worker).serial
    wait_for("a second failed renewal", lambda: agent_log(worker).count(failed) >= 2, timeout=60)
    assert disk(worker).serial == before
    manager.start(*WINDOW)
    wait_for("the worker to renew once the manager is back", lambda: disk(worker).serial != before, timeout=90)
    # The session reconnects with the renewed certificate: the worker is Ready again.
    wait_for("the worker Ready", lambda: manager.docker(
        "node", "inspect", "--format", "{{.Status.State}}", worker.node_id).stdout.strip() == "ready")
