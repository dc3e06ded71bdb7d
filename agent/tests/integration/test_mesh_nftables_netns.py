"""The nftables routing mesh on a real kernel, in network namespaces of its own.

Topology (all inside namespaces this test creates; nothing in the host's namespace is touched):

    client (10.201.0.2) --- node (10.201.0.1 | 10.201.1N.1) --- backend N (10.201.1N.2, HTTP on port 80)

The node routes and holds the mesh table. The backends have no route back to the client, so a reply only
arrives if the node masqueraded the connection, as it must for tasks on other hosts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm_agent.net.mesh.ipvs import IpvsMesh, ipvs_available, translate
from swarm_agent.net.mesh.model import (
    Backend,
    Frontend,
    MeshService,
    MeshState,
    mesh_state,
)
from swarm_agent.net.mesh.nftables import NftablesMesh, normalised_listing

pytestmark = [pytest.mark.integration, pytest.mark.requires("nft", "ip")]

PREFIX = f"msh{os.getpid()}"
NODE_IP = "10.201.0.1"
CLIENT_IP = "10.201.0.2"
VIP = "10.201.200.10"
PUBLISHED = 8080


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True)


def _python_in(netns: str, code: str, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"python in {netns} failed: {done.stderr}"
    return done.stdout


@dataclass
class Topology:
    node: str
    client: str
    backends: dict[str, str] = field(default_factory=dict)  # backend name -> its address

    def mesh(self) -> NftablesMesh:
        return NftablesMesh(("ip", "netns", "exec", self.node, "nft"))

    def service(self, *names: str) -> MeshService:
        return MeshService("web", vips=(VIP,), published=(Frontend("tcp", PUBLISHED, 80),),
                           vip_ports=(Frontend("tcp", 80, 80),),
                           backends=tuple(Backend(self.backends[n]) for n in names))


def _add_netns(name: str, created: list[str]) -> None:
    _run("ip", "netns", "add", name)
    created.append(name)
    _run("ip", "-n", name, "link", "set", "lo", "up")


def _link(a: str, a_ip: str, b: str, b_ip: str) -> None:
    """A veth pair between two namespaces, created inside them (never in the host's namespace)."""
    _run("ip", "link", "add", "name", "up0", "netns", a, "type", "veth", "peer", "name", "down0", "netns", b)
    # Each namespace may hold several links; rename by peer so names stay unique in the namespace.
    _run("ip", "-n", a, "link", "set", "up0", "name", f"to-{b[-2:]}")
    _run("ip", "-n", b, "link", "set", "down0", "name", f"to-{a[-2:]}")
    _run("ip", "-n", a, "addr", "add", f"{a_ip}/24", "dev", f"to-{b[-2:]}")
    _run("ip", "-n", b, "addr", "add", f"{b_ip}/24", "dev", f"to-{a[-2:]}")
    _run("ip", "-n", a, "link", "set", f"to-{b[-2:]}", "up")
    _run("ip", "-n", b, "link", "set", f"to-{a[-2:]}", "up")


_WAIT_FOR_PORTS = """
import socket, sys, time
deadline = time.monotonic() + 10
for address in sys.argv[1:]:
    while True:
        try:
            socket.create_connection((address, 80), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
"""

_REQUESTS = """
import collections, json, sys, urllib.request
url, count = sys.argv[1], int(sys.argv[2])
answers = collections.Counter()
for _ in range(count):
    with urllib.request.urlopen(url, timeout=5) as reply:
        answers[reply.read().decode().strip()] += 1
print(json.dumps(answers))
"""

_CONNECT = """
import json, socket, sys, time
started = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    outcome = "connected"
except ConnectionRefusedError:
    outcome = "refused"
except OSError as exc:
    outcome = type(exc).__name__
print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
"""


@pytest.fixture
def topology() -> Iterator[Topology]:
    created: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="mesh-") as scratch:
        try:
            topo = Topology(node=f"{PREFIX}nd", client=f"{PREFIX}cl")
            _add_netns(topo.node, created)
            _add_netns(topo.client, created)
            _run("ip", "netns", "exec", topo.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _link(topo.node, NODE_IP, topo.client, CLIENT_IP)
            _run("ip", "-n", topo.client, "route", "add", "default", "via", NODE_IP)
            for n in range(3):
                name, address = f"{PREFIX}b{n}", f"10.201.1{n}.2"
                _add_netns(name, created)
                _link(topo.node, f"10.201.1{n}.1", name, address)
                root = Path(scratch, name)
                root.mkdir()
                (root / "index.html").write_text(f"{name}\n")
                servers.append(subprocess.Popen(
                    ["ip", "netns", "exec", name, sys.executable, "-m", "http.server", "--bind", address,
                     "--directory", str(root), "80"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                topo.backends[name] = address
            _python_in(topo.node, _WAIT_FOR_PORTS, *topo.backends.values())
            yield topo
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                try:
                    server.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            for name in reversed(created):
                subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _shares(topo: Topology, url: str, count: int, netns: str | None = None) -> dict[str, int]:
    return json.loads(_python_in(netns or topo.client, _REQUESTS, url, str(count)))


def _assert_even(shares: dict[str, int], backends: list[str], count: int) -> None:
    assert set(shares) == set(backends), shares
    assert sum(shares.values()) == count
    # numgen random: each share is binomial; 0.6 of the fair share is more than 5 standard deviations away.
    for name in backends:
        assert shares[name] >= 0.6 * count / len(backends), shares


def test_published_port_and_vip_balance_over_every_backend(topology: Topology) -> None:
    mesh = topology.mesh()
    names = sorted(topology.backends)
    mesh.full(mesh_state(topology.service(*names)))
    count = 240
    _assert_even(_shares(topology, f"http://{NODE_IP}:{PUBLISHED}/", count), names, count)
    _assert_even(_shares(topology, f"http://{VIP}:80/", count), names, count)
    # The output hook: the node itself, dialling its own published port.
    _assert_even(_shares(topology, f"http://{NODE_IP}:{PUBLISHED}/", count, netns=topology.node), names, count)


def test_incremental_change_equals_full_rebuild_and_no_backend_refuses(topology: Topology) -> None:
    mesh = topology.mesh()
    names = sorted(topology.backends)
    mesh.full(mesh_state(topology.service(*names)))

    # One backend leaves: only the service's chain is rewritten, and the result is what a rebuild gives.
    remaining = names[:2]
    mesh.apply(mesh_state(topology.service(*remaining)))
    incremental = normalised_listing(mesh.listing() or {})
    _assert_even(_shares(topology, f"http://{VIP}:80/", 120), remaining, 120)
    mesh.full(mesh_state(topology.service(*remaining)))
    assert incremental == normalised_listing(mesh.listing() or {})

    # A restarted agent adopts the table and converges it.
    restarted = topology.mesh()
    restarted.reconcile_on_start(mesh_state(topology.service(names[0])))
    adopted = normalised_listing(restarted.listing() or {})
    restarted.full(mesh_state(topology.service(names[0])))
    assert adopted == normalised_listing(restarted.listing() or {})
    assert _shares(topology, f"http://{NODE_IP}:{PUBLISHED}/", 20) == {names[0]: 20}

    # No backend left: refused at once, not a hang.
    restarted.apply(mesh_state(topology.service()))
    for address, port in ((NODE_IP, PUBLISHED), (VIP, 80)):
        result = json.loads(_python_in(topology.client, _CONNECT, address, str(port)))
        assert result["outcome"] == "refused", result
        assert result["seconds"] < 1, result


def test_removing_the_service_leaves_nothing_of_it(topology: Topology) -> None:
    mesh = topology.mesh()
    mesh.full(mesh_state(topology.service(*topology.backends)))
    mesh.apply({})
    listing = normalised_listing(mesh.listing() or {})
    assert not [key for key in listing if "svc_" in key]
    assert all("elem" not in item for key, item in listing.items() if key.startswith("map:"))
    mesh.remove()
    assert mesh.listing() is None


@pytest.fixture(scope="module")
def scratch_pair() -> Iterator[tuple[str, str]]:
    """Two empty namespaces: one for incremental applies, one for full rebuilds."""
    created: list[str] = []
    try:
        for suffix in ("i", "f"):
            _add_netns(f"{PREFIX}s{suffix}", created)
        yield created[0], created[1]
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


_IDS = ["a", "b", "c", "d"]


@st.composite
def _states(draw: st.DrawFn) -> MeshState:
    services = []
    for number, sid in enumerate(draw(st.lists(st.sampled_from(_IDS), unique=True, max_size=4))):
        frontends = draw(st.lists(st.builds(Frontend, st.sampled_from(["tcp", "udp"]), st.integers(1, 4),
                                            st.integers(1, 3)), max_size=2))
        backends = draw(st.lists(st.builds(Backend, st.sampled_from([f"10.0.0.{i}" for i in range(1, 6)])),
                                 max_size=4))
        published = tuple({(f.proto, f.port): Frontend(f.proto, 100 * (number + 1) + f.port, f.target_port)
                           for f in frontends}.values())
        vip_ports = tuple({(f.proto, f.port): f for f in frontends}.values())
        services.append(MeshService(sid, (f"10.9.{number}.1",), published, vip_ports, tuple(backends)))
    return mesh_state(*services)


@given(st.lists(_states(), min_size=1, max_size=6))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_apply_sequence_ends_as_a_full_rebuild_in_the_kernel(scratch_pair: tuple[str, str],
                                                                 states: list[MeshState]) -> None:
    incremental_ns, full_ns = scratch_pair
    incremental = NftablesMesh(("ip", "netns", "exec", incremental_ns, "nft"))
    rebuilt = NftablesMesh(("ip", "netns", "exec", full_ns, "nft"))
    incremental.full({})
    for state in states:
        incremental.apply(state)
        rebuilt.full(state)
        assert normalised_listing(incremental.listing() or {}) == normalised_listing(rebuilt.listing() or {})


def test_ipvs_applier_on_a_real_kernel() -> None:
    usable, why = ipvs_available()
    if not usable:
        pytest.skip(f"{why}: the IPVS applier needs a kernel with CONFIG_IP_VS")
    netns = f"{PREFIX}ipvs"
    state = mesh_state(MeshService("web", vips=("10.9.0.2",), published=(Frontend("tcp", 8080, 80),),
                                   vip_ports=(Frontend("tcp", 80, 80),), backends=(Backend("10.0.1.2"),)))
    code = (
        "import json, sys\n"
        "from swarm_agent.net.mesh.ipvs import IpvsMesh\n"
        "from swarm_agent.net.mesh.model import *\n"
        "mesh = IpvsMesh()\n"
        "mesh.apply(mesh_state(MeshService('web', vips=('10.9.0.2',), published=(Frontend('tcp', 8080, 80),),"
        " vip_ports=(Frontend('tcp', 80, 80),), backends=(Backend('10.0.1.2'),))))\n"
        "print(json.dumps(sorted([list(k), sorted([d.ip, d.port] for d in dests)]"
        " for k, (_, dests) in mesh._current().items())))\n"
    )
    _run("ip", "netns", "add", netns)
    try:
        got = json.loads(_python_in(netns, code))
    finally:
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True, check=False)
    want = sorted([list(s.key), sorted([d.ip, d.port] for d in s.destinations)] for s in translate(state).services)
    assert got == want
    assert IpvsMesh.name == "ipvs"
