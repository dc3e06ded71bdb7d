"""``docker swarm ca --rotate``: the swarm moves to a new root CA, generated or given, without losing a node or a task."""

import http.client
import ssl
from pathlib import Path

import pytest

from harness.cluster import SwarmNode, form_swarm, running_tasks, wait_for
from swarm_agent import pki
from swarm_agent.manager.ca import RootCA

pytestmark = pytest.mark.integration

HOUR_NS = 3600 * 10**9


def certs_of(node: SwarmNode) -> pki.NodeCerts:
    return wait_for(f"{node.name}'s certificates on disk", lambda: pki.NodeCerts.load(node.data_dir), timeout=10)


def task_containers(node: SwarmNode) -> set[str]:
    return set(node.host.docker("ps", "-q", "--no-trunc", "--filter", "label=com.docker.swarm.task.id").stdout.split())


def rotate(manager: SwarmNode, *options: str) -> str:
    """Rotate with the docker CLI, which returns once every node holds a certificate from the new root and trusts
    it alone; then the swarm's root, as ``docker swarm ca`` prints it."""
    manager.docker("swarm", "ca", "--rotate", "--quiet", *options, timeout=180)
    return manager.docker("swarm", "ca").stdout.strip()


def assert_all_on(root_pem: str, nodes: list[SwarmNode]) -> None:
    for node in nodes:
        certs = certs_of(node)
        assert certs.ca_pem.decode().strip() == root_pem, f"{node.name} trusts other roots"
        assert pki.issued_by(certs.cert_pem, root_pem.encode()), f"{node.name}'s certificate is not from the new root"


def logs(manager: SwarmNode, service: str) -> int:
    """How many of the service's tasks said hello, as ``docker service logs`` shows."""
    return manager.docker("service", "logs", "--raw", service, timeout=60).stdout.count("hello")


def in_progress(manager: SwarmNode) -> bool:
    status, swarm = manager.api("GET", "/swarm")
    assert status == 200, swarm
    return swarm["RootRotationInProgress"]


def request_with(manager: SwarmNode, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> int:
    """One request to the manager's TLS listener presenting this certificate: the HTTP status."""
    host, port = manager.addr.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), timeout=10,
                                       context=pki.client_context(ca_pem, cert_pem, key_pem))
    try:
        conn.request("GET", "/swarmd/ca")
        return conn.getresponse().status
    finally:
        conn.close()


def test_root_rotation_keeps_every_node_and_task(lab, busybox, tmp_path: Path):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "w1")
    for host in hosts:
        host.load_image(archive)
    manager, worker = nodes = form_swarm(hosts)
    manager.docker("service", "create", "--detach", "--name", "keep", "--mode", "global", image, "sleep", "100000")
    manager.docker("service", "create", "--detach", "--name", "talk", "--mode", "global", image,
                   "sh", "-c", "echo hello; sleep 100000")
    wait_for("a task of each service running on each node",
             lambda: len(running_tasks(manager, "keep")) == len(running_tasks(manager, "talk")) == 2)
    # Each node's log client is made now, with the first root's trust; it must follow the rotations.
    wait_for("the hello of each talk task in its logs", lambda: logs(manager, "talk") == 2)
    containers = {node.name: task_containers(node) for node in nodes}
    first_root = manager.docker("swarm", "ca").stdout.strip()

    # A generated root.
    second_root = rotate(manager)
    assert second_root.startswith("-----BEGIN CERTIFICATE-----") and second_root != first_root
    assert_all_on(second_root, nodes)
    assert in_progress(manager) is False
    for node in manager.json("node", "inspect", manager.node_id, worker.node_id):
        assert node["Description"]["TLSInfo"]["TrustRoot"].strip() == second_root

    # An external root, given with its key; a bad one is refused first, naming the field, and changes nothing.
    external = RootCA.generate()
    (tmp_path / "ca.crt").write_bytes(external.cert_pem)
    (tmp_path / "ca.key").write_bytes(external.key_pem or b"")
    (tmp_path / "other.key").write_bytes(RootCA.generate().key_pem or b"")
    worker_certs = certs_of(worker)
    (tmp_path / "leaf.crt").write_bytes(worker_certs.cert_pem)
    (tmp_path / "leaf.key").write_bytes(worker_certs.key_pem)
    mismatch = manager.docker("swarm", "ca", "--rotate", "--ca-cert", str(tmp_path / "ca.crt"),
                              "--ca-key", str(tmp_path / "other.key"), check=False)
    assert mismatch.returncode != 0 and "SigningCAKey" in mismatch.stderr and "does not match" in mismatch.stderr, mismatch.stderr
    not_ca = manager.docker("swarm", "ca", "--rotate", "--ca-cert", str(tmp_path / "leaf.crt"),
                            "--ca-key", str(tmp_path / "leaf.key"), check=False)
    assert not_ca.returncode != 0 and "SigningCACert" in not_ca.stderr and "not a CA" in not_ca.stderr, not_ca.stderr
    assert manager.docker("swarm", "ca").stdout.strip() == second_root
    assert in_progress(manager) is False

    given = rotate(manager, "--ca-cert", str(tmp_path / "ca.crt"), "--ca-key", str(tmp_path / "ca.key"))
    assert given == external.cert_pem.decode().strip()
    assert_all_on(given, nodes)

    # Rotate away from the external root: a certificate it signs is refused from then on, the nodes' own are not.
    third_root = rotate(manager)
    assert_all_on(third_root, nodes)
    node_key = pki.new_key_pem()
    forged = external.sign_csr(pki.make_csr(node_key), node_id=worker.node_id, role="worker",
                               cluster_id=worker_certs.identity.cluster_id, expiry_ns=HOUR_NS)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request_with(manager, third_root.encode(), forged, node_key)
    current = certs_of(worker)
    assert request_with(manager, third_root.encode(), current.cert_pem, current.key_pem) == 200

    # Nothing restarted: the same containers, every node Ready, and the swarm still takes work and new nodes.
    assert {node.name: task_containers(node) for node in nodes} == containers
    assert logs(manager, "talk") == 2
    assert manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split() == ["Ready", "Ready"]
    manager.docker("service", "create", "--detach", "--name", "more", "--replicas", "2", image, "sleep", "100000")
    wait_for("the new service's 2 tasks running", lambda: len(running_tasks(manager, "more")) == 2)
    late = SwarmNode(lab.add_hosts("w2")[0])
    late.start()
    late.join(manager)
    assert_all_on(third_root, [late])


def test_root_rotation_with_three_managers(lab, busybox):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "m2", "m3", "w1")
    nodes = [SwarmNode(h) for h in hosts]
    for host, node in zip(hosts, nodes):
        host.load_image(archive)
        node.start()
    first, second, third, worker = nodes
    first.init()
    for node in (second, third):
        node.join(first, role="manager")
    worker.join(first)
    wait_for("three reachable managers", lambda: first.docker(
        "node", "ls", "--format", "{{.ManagerStatus}}").stdout.split().count("Reachable") == 2)
    first.docker("service", "create", "--detach", "--name", "keep", "--mode", "global", image, "sleep", "100000")
    wait_for("a task running on each node", lambda: len(running_tasks(first, "keep")) == 4)
    containers = {node.name: task_containers(node) for node in nodes}

    # Asked of a manager other than the one that made the swarm; whichever leads finishes it.
    root = rotate(second)
    assert_all_on(root, nodes)
    assert third.docker("swarm", "ca").stdout.strip() == root
    assert {node.name: task_containers(node) for node in nodes} == containers
    assert first.docker("node", "ls", "--format", "{{.Status}}").stdout.split() == ["Ready"] * 4

    # A manager's agent restarts on the new certificates: its etcd and its listener work as before.
    third.kill()
    third.start()
    wait_for("m3 serving the API again", lambda: third.docker("node", "ls", check=False).returncode == 0)
    third.docker("service", "create", "--detach", "--name", "more", "--replicas", "4", image, "sleep", "100000")
    wait_for("the new service's 4 tasks running", lambda: len(running_tasks(first, "more")) == 4)
    assert all(containers[node.name] <= task_containers(node) for node in nodes)
