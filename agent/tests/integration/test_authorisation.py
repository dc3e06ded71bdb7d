"""Every route a manager serves on TCP 2377, against every kind of caller that must be refused, over real TLS.

The routes are the operations of the API's OpenAPI document as the manager serves it
(``GET /swarmd/openapi.json``), checked to be exactly the routes of the application the agent builds
(``build_app`` over ``NodeAgent.routes()``), not a copy in this file: a route added later is audited without
anyone remembering to list it.

Public routes (no client certificate needed), and why:
- ``GET /swarmd/ca``: a joining node has no certificate yet; it fetches the CA and checks it against the
  digest in its token before it sends anything else.
- ``POST /swarmd/join``: the join token is the credential; the node gets its first certificate from it.
"""

import asyncio
import http.client
import json
import re
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.cluster import SwarmNode, etcd_of, form_swarm, wait_for
from swarm_agent import pki, tokens
from swarm_agent.api.app import build_app
from swarm_agent.manager.ca import RootCA
from swarm_agent.manager.keys import CA_AAD, KeyFile, unseal
from swarm_agent.node import AgentConfig, NodeAgent
from swarm_agent.store.state import CA_KEY, SESSIONS, Store

pytestmark = pytest.mark.integration

PUBLIC = {("GET", "/swarmd/ca"), ("POST", "/swarmd/join")}
REFUSED_AT_HANDSHAKE = "handshake refused"


def documented_routes(addr: str, context: ssl.SSLContext) -> list[tuple[str, str, str]]:
    """(method, path template, access) of every operation of the OpenAPI document the manager serves, which
    must be every route of the manager's TCP application, with the access the route declares."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        conn.request("GET", "/swarmd/openapi.json")
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200, doc
    documented = [(method.upper(), path, op["x-access"])
                  for path, item in doc["paths"].items() for method, op in item.items()]
    agent = NodeAgent(AgentConfig())
    routes = agent.routes()
    access = {(r.method, r.path): r.access for r in routes}
    app = build_app(agent, routes, local=False)
    served = {(r.method, r.resource.canonical, access[(r.method, r.resource.canonical.removeprefix("/v{api_version}"))])
              for r in app.router.routes() if r.resource is not None}
    assert set(documented) == served
    return documented


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path.replace("{api_version}", "1.41"))


def call(addr: str, method: str, path: str, context: ssl.SSLContext) -> tuple[int | str, str]:
    """(HTTP status, message) of one request on a fresh TLS connection, or the handshake's refusal."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        body = b"{}" if method in ("POST", "PUT") else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except (ssl.SSLError, ConnectionError) as exc:
        return REFUSED_AT_HANDSHAKE, str(exc)
    finally:
        conn.close()
    try:
        message = json.loads(data).get("message", "") if data.strip() else ""
    except (ValueError, AttributeError):
        message = data.decode(errors="replace")[:200]
    return resp.status, message


def certs_of(node: SwarmNode) -> pki.NodeCerts:
    certs = pki.NodeCerts.load(node.data_dir)
    assert certs is not None
    return certs


def context_of(certs: pki.NodeCerts) -> ssl.SSLContext:
    return pki.client_context(certs.ca_pem, certs.cert_pem, certs.key_pem)


def cluster_ca(manager: SwarmNode) -> RootCA:
    """The swarm's signing CA, as whoever holds a manager's disk could read it: the sealed key from the store,
    opened with the manager's data key."""

    async def read() -> dict:
        etcd = etcd_of(manager)
        try:
            record = await Store(etcd).get_json(CA_KEY)
        finally:
            await etcd.close()
        assert record is not None
        return record

    record = asyncio.run(read())
    data_key = KeyFile.of(manager.data_dir).load()
    return RootCA.from_pem(record["cert"].encode(), unseal(data_key, record["sealed_key"], CA_AAD))


def expired_certificate(ca: RootCA, identity: pki.Identity) -> tuple[bytes, bytes]:
    """A certificate for ``identity`` signed by the real cluster CA, whose validity ended yesterday."""
    key_pem = pki.new_key_pem()
    key = pki.load_private_key(key_pem)
    ca_key = pki.load_private_key(ca.key_pem or b"")
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.cluster_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, pki.ROLE_OU[identity.role]),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.node_id),
        ]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_every_route_refuses_whoever_may_not_call_it(lab, tmp_path: Path):
    manager, worker, leaving = form_swarm(lab.add_hosts("m1", "w1", "w2"))
    wait_for("3 nodes Ready",
             lambda: manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split().count("Ready") == 3)

    mine = certs_of(manager)
    ca = cluster_ca(manager)
    assert ca.cert_pem.strip() == mine.ca_pem.strip()
    expired_cert, expired_key = expired_certificate(ca, mine.identity)  # this very manager's identity
    stranger_ca = RootCA.generate()
    stranger_key = pki.new_key_pem()
    stranger_cert = stranger_ca.sign_csr(pki.make_csr(stranger_key), node_id=mine.identity.node_id, role="manager",
                                         cluster_id=mine.identity.cluster_id, expiry_ns=3600 * 10**9)

    # A removed node: its agent stops, the node is removed, and its certificate (still in date) is kept.
    removed = certs_of(leaving)
    removed_id = leaving.node_id
    leaving.kill()
    manager.docker("node", "rm", "--force", removed_id)

    anonymous = pki.client_context(mine.ca_pem)
    callers = {
        "no certificate": anonymous,
        "another CA": pki.client_context(mine.ca_pem, stranger_cert, stranger_key),
        "expired": pki.client_context(mine.ca_pem, expired_cert, expired_key),
        "removed node": context_of(removed),
        "worker": context_of(certs_of(worker)),
        "manager": context_of(mine),
    }
    routes = documented_routes(manager.addr, callers["manager"])
    assert {(m, p) for m, p, a in routes if a == "public"} == PUBLIC
    wrong = []
    for method, path, access in routes:
        target = concrete(path)
        bare = target.removeprefix("/v1.41")

        def expect(who: str, ok: bool, why: str, outcome: tuple) -> None:
            if not ok:
                wrong.append(f"{method} {target} [{access}] with {who}: {outcome} ({why})")

        def forbidden(outcome: tuple, words: str) -> bool:
            # A HEAD answer has no body to carry the message.
            return outcome[0] == 403 and (method == "HEAD" or words in outcome[1])

        outcome = call(manager.addr, method, target, callers["no certificate"])
        if (method, bare) in PUBLIC:
            expect("no certificate", outcome[0] != 403, "public", outcome)
        else:
            expect("no certificate", forbidden(outcome, "client certificate"), "needs one", outcome)
        for who in ("another CA", "expired"):
            outcome = call(manager.addr, method, target, callers[who])
            expect(who, outcome[0] == REFUSED_AT_HANDSHAKE, "TLS must refuse it", outcome)
        outcome = call(manager.addr, method, target, callers["removed node"])
        expect("removed node", forbidden(outcome, "was removed"), "removed", outcome)
        if access in ("manager", "local"):
            outcome = call(manager.addr, method, target, callers["worker"])
            expect("worker", forbidden(outcome, "a worker certificate may not call"),
                   "manager-only", outcome)
        if access == "local":
            outcome = call(manager.addr, method, target, callers["manager"])
            expect("manager", outcome[0] == 403, "unix socket only", outcome)
    assert not wrong, "\n".join(wrong)

    # The removed node, back, rejoins only with a token, and as a new node.
    leaving.start()
    leaving.docker("swarm", "leave", "--force")
    rejoined = leaving.join(manager)
    assert rejoined and rejoined != removed_id
    wait_for("the rejoined node Ready", lambda: manager.docker(
        "node", "inspect", "--format", "{{.Status.State}}", rejoined).stdout.strip() == "ready")


def test_a_worker_reports_only_its_own_tasks(lab):
    manager, worker = form_swarm(lab.add_hosts("m1", "w1"))
    # No such image anywhere: the task is assigned to the manager's node and fails there, which is all this needs.
    manager.docker("service", "create", "--detach", "--name", "pinned", "--constraint", "node.role==manager",
                   "local/absent:1")
    task_id = wait_for("a task assigned to the manager", lambda: next(iter(manager.docker(
        "service", "ps", "-q", "--no-trunc", "--filter", f"node={manager.node_id}", "pinned").stdout.split()), ""))
    host, port = manager.addr.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context_of(certs_of(worker)), timeout=10)
    report = {"updates": [{"ID": task_id, "Status": {"State": "complete", "Message": "forged"}}]}
    conn.request("POST", "/swarmd/status", body=json.dumps(report), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 403 and f"not assigned to node {worker.node_id}" in body["message"], body
    state = manager.docker("inspect", "--type", "task", "--format", "{{.Status.Message}}", task_id).stdout
    assert "forged" not in state


def test_a_node_keeps_alive_only_its_own_session(lab):
    manager, worker, other = form_swarm(lab.add_hosts("m1", "w1", "w2"))

    async def sessions_now() -> dict[str, int]:
        etcd = etcd_of(manager)
        try:
            kvs, _ = await etcd.get_prefix(SESSIONS)
        finally:
            await etcd.close()
        return {kv.key.removeprefix(SESSIONS): int(json.loads(kv.value)["session"]) for kv in kvs}

    def all_three() -> dict[str, int] | None:
        found = asyncio.run(sessions_now())
        return found if len(found) == 3 else None

    sessions = wait_for("a session of each node", all_three)
    host, port = manager.addr.rsplit(":", 1)

    def heartbeat(session: int) -> tuple[int, dict]:
        conn = http.client.HTTPSConnection(host, int(port), context=context_of(certs_of(worker)), timeout=10)
        try:
            conn.request("POST", "/swarmd/heartbeat", body=json.dumps({"session": session}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    assert heartbeat(sessions[worker.node_id])[0] == 200
    status, body = heartbeat(sessions[other.node_id])
    assert status == 410 and f"not the session of node {worker.node_id}" in body["message"], body


def test_join_tokens_rotate_and_a_foreign_ca_digest_is_refused(lab):
    manager, worker = form_swarm(lab.add_hosts("m1", "w1"))
    late = SwarmNode(lab.add_hosts("w2")[0])
    late.start()
    old = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()

    # A token for another swarm's CA (same secret): the joining node stops before it sends the token.
    foreign = "-".join(old.split("-")[:2] + [tokens.ca_digest(RootCA.generate().cert_pem), old.split("-")[3]])
    refused = late.docker("swarm", "join", "--token", foreign, manager.addr, check=False)
    assert refused.returncode != 0 and "does not match the join token" in refused.stderr, refused.stderr
    assert late.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"

    manager.docker("swarm", "join-token", "--rotate", "worker")
    new = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
    assert new != old
    refused = late.docker("swarm", "join", "--token", old, manager.addr, check=False)
    assert refused.returncode != 0 and "invalid join token" in refused.stderr, refused.stderr
    assert late.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"
    late.docker("swarm", "join", "--token", new, manager.addr)

    # The node that joined with the old token keeps its session and its rights.
    status, agent = worker.api("GET", "/swarmd/agent")
    assert status == 200 and agent["session_manager"] == manager.addr, agent
    wait_for("both workers Ready", lambda: manager.docker(
        "node", "ls", "--filter", "role=worker", "--format", "{{.Status}}").stdout.split() == ["Ready", "Ready"])
