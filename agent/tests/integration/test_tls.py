"""TCP 2377 speaks mutual TLS: the docker CLI with a manager certificate works, other callers get what their role allows."""

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.cluster import SwarmNode, form_swarm
from harness.hosts import DOCKER_CLI
from swarm_agent import pki
from swarm_agent.manager.ca import RootCA

pytestmark = pytest.mark.integration


def _tls_cli(certs: Path, target: SwarmNode, *args: str) -> subprocess.CompletedProcess:
    """The docker CLI over TCP, authenticated by a node's own certificate."""
    return subprocess.run(
        [DOCKER_CLI, "--tlsverify", f"--tlscacert={certs / 'swarm-root-ca.crt'}",
         f"--tlscert={certs / 'swarm-node.crt'}", f"--tlskey={certs / 'swarm-node.key'}",
         "-H", f"tcp://{target.addr}", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def get(target: SwarmNode, path: str, context: ssl.SSLContext) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"https://{target.addr}{path}", context=context, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_mutual_tls_and_roles(lab):
    manager, worker = form_swarm(lab.add_hosts("m1", "w1"))

    listing = _tls_cli(manager.data_dir / "certificates", manager, "node", "ls")
    assert listing.returncode == 0 and "w1" in listing.stdout, listing.stderr

    refused = _tls_cli(worker.data_dir / "certificates", manager, "node", "ls")
    assert refused.returncode != 0 and "a worker certificate may not call" in refused.stderr, refused.stderr

    ca = (manager.data_dir / "certificates" / "swarm-root-ca.crt").read_bytes()
    status, body = get(manager, "/v1.41/nodes", pki.client_context(ca))
    assert status == 403 and "client certificate" in body["message"]
    # Fetching the CA before a join needs no certificate.
    status, body = get(manager, "/swarmd/ca", pki.client_context(ca))
    assert status == 200 and body["ca"].encode() == ca

    # A certificate from another CA does not get past the handshake.
    stranger_ca = RootCA.generate()
    key = pki.new_key_pem()
    cert = stranger_ca.sign_csr(pki.make_csr(key), node_id="intruder", role="manager", cluster_id="other",
                                expiry_ns=3600 * 10**9)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
        get(manager, "/v1.41/nodes", pki.client_context(ca, cert, key))
