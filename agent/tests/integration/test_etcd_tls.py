"""etcd speaks mutual TLS on both ports, and only managers' etcd certificates open them: a worker's certificate
from the same swarm, a certificate from another CA, none at all, and plain HTTP are all refused."""

import asyncio
import http.client
import ssl

import pytest

from harness.cluster import SwarmNode, wait_for
from swarm_agent import pki
from swarm_agent.manager.ca import RootCA
from swarm_agent.manager.etcd_member import CLIENT_PORT, PEER_PORT, client_tls
from swarm_agent.store.etcd import EtcdClient, EtcdUnavailable

pytestmark = pytest.mark.integration


def certs_of(node: SwarmNode) -> pki.NodeCerts:
    certs = pki.NodeCerts.load(node.data_dir)
    assert certs is not None
    return certs


def presenting(cert_pem: bytes | None = None, key_pem: bytes | None = None) -> ssl.SSLContext:
    """A caller that does not care whom it talks to (an attacker would not), presenting this certificate."""
    return pki.client_context(None, cert_pem, key_pem)


def etcd_answer(ip: str, port: int, context: ssl.SSLContext) -> str:
    """What etcd's port says to this caller: "ok" once it got an HTTP answer, else the TLS error."""
    conn = http.client.HTTPSConnection(ip, port, context=context, timeout=10)
    try:
        conn.request("GET", "/version")
        conn.getresponse().read()
        return "ok"
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc}"
    finally:
        conn.close()


def plain_http_answer(ip: str, port: int) -> str:
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request("GET", "/version")
        resp = conn.getresponse()
        return f"{resp.status} {resp.read()[:80]!r}"
    except (http.client.HTTPException, ConnectionError) as exc:
        return f"refused: {exc!r}"
    finally:
        conn.close()


def test_only_managers_reach_etcd(lab):
    first, worker, second = (SwarmNode(h) for h in lab.add_hosts("m1", "w1", "m2"))
    for node in (first, worker, second):
        node.start()
    first.init()
    worker.join(first)
    second.join(first, role="manager")
    # The second manager's member joined over the peer port, as a learner, and was promoted: both speak TLS.
    wait_for("two reachable managers", lambda: first.docker(
        "node", "ls", "--format", "{{.ManagerStatus}}").stdout.split().count("Reachable") == 1)

    manager_certs, worker_certs = certs_of(first), certs_of(worker)
    assert manager_certs.etcd_cert_pem is not None and worker_certs.etcd_cert_pem is None
    assert not list((worker.data_dir / "certificates").glob("*etcd*")), "a worker holds etcd credentials"
    stranger_ca = RootCA.generate()
    stranger_key = pki.new_key_pem()
    stranger_cert = stranger_ca.sign_csr(pki.make_csr(stranger_key), node_id=first.node_id, role="manager",
                                         cluster_id=manager_certs.identity.cluster_id, expiry_ns=3600 * 10**9)
    callers = {
        "no certificate": presenting(),
        "another CA": presenting(stranger_cert, stranger_key),
        # A real node certificate of this swarm, from its root CA: still not an etcd certificate.
        "worker": presenting(worker_certs.cert_pem, worker_certs.key_pem),
        "manager's node certificate": presenting(manager_certs.cert_pem, manager_certs.key_pem),
    }
    ip = first.host.ip
    for port in (CLIENT_PORT, PEER_PORT):
        assert plain_http_answer(ip, port).startswith(("400", "refused")), f"port {port} answers plain HTTP"
        for who, context in callers.items():
            answer = etcd_answer(ip, port, context)
            assert answer.startswith("refused"), f"{who} got through to etcd's port {port}"
        etcd_cert = presenting(manager_certs.etcd_cert_pem, manager_certs.etcd_key_pem)
        assert etcd_answer(ip, port, etcd_cert) == "ok", f"a manager's etcd certificate is refused on port {port}"

    async def read_as(context: ssl.SSLContext) -> int:
        client = EtcdClient([f"https://{ip}:{CLIENT_PORT}"], context, timeout=5)
        try:
            return await client.revision()
        finally:
            await client.close()

    # The client a manager uses verifies the member as much as the member verifies it.
    assert asyncio.run(read_as(client_tls(certs_of(second)))) > 0
    with pytest.raises(EtcdUnavailable):
        asyncio.run(read_as(pki.client_context(worker_certs.ca_pem, worker_certs.cert_pem, worker_certs.key_pem)))

    # Demoted, the second manager gives up its etcd certificate with its member.
    first.docker("node", "demote", second.node_id)
    wait_for("m2 holds no etcd certificate", lambda: not list((second.data_dir / "certificates").glob("*etcd*")),
             timeout=60)
