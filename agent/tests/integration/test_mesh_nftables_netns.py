"""The nftables routing mesh on a real kernel, in network namespaces of its own.

Topology (all inside namespaces this test creates; nothing in the host's namespace is touched):

    client (10.201.0.2) --- node (10.201.0.1, VIP 10.201.200.10/32 | 10.201.1N.1) --- backend N (10.201.1N.2)

The node routes and holds the mesh table; the VIP is a local address of the node, as on an overlay bridge.
Each backend answers "<name> <port>" on TCP ports 80 and 7000 and UDP port 5300, so a reply tells which backend
and which of its ports a connection reached. The backends have no route back to the client, so a reply only
arrives if the node masqueraded the connection, as it must for tasks on other hosts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

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
TCP_PORTS = (80, 7000)
UDP_PORT = 5300
NO_LISTENER = 9999  # no backend listens here; the node does (see test_a_vip_port_without_listener...)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True)


def _python_in(netns: str, code: str, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"python in {netns} failed: {done.stderr}"
    return done.stdout


def _start_python_in(netns: str, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", code, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@dataclass
class Topology:
    node: str
    client: str
    backends: dict[str, str] = field(default_factory=dict)  # backend name -> its address

    def mesh(self, local_backend_ifaces: tuple[str, ...] = ()) -> NftablesMesh:
        return NftablesMesh(("ip", "netns", "exec", self.node, "nft"), local_backend_ifaces)

    def service(self, *names: str) -> MeshService:
        """The service as the agent builds it: a VIP (every port) and one published port."""
        return MeshService("web", vips=(VIP,), published=(Frontend("tcp", PUBLISHED, 80),),
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


# A backend: answers "<name> <port>" on each TCP port (then closes) and to each UDP datagram. UDP is bound
# first, so that once TCP answers, UDP does too.
_BACKEND = """
import socket, socketserver, sys, threading
name, address, tcp_ports, udp_ports = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(",")

class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        self.request[1].sendto(f"{name} {self.server.server_address[1]}".encode(), self.client_address)

class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"{name} {self.server.server_address[1]}\\n".encode())

socketserver.TCPServer.allow_reuse_address = True
servers = [socketserver.UDPServer((address, int(p)), Udp) for p in udp_ports]
servers += [socketserver.ThreadingTCPServer((address, int(p)), Tcp) for p in tcp_ports]
threads = [threading.Thread(target=s.serve_forever) for s in servers]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""

_WAIT_FOR_PORTS = """
import socket, sys, time
deadline = time.monotonic() + 10
port = int(sys.argv[1])
for address in sys.argv[2:]:
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
"""

# Counts the answers of `count` connections (tcp) or datagrams (udp) to address:port.
_ASK = """
import collections, json, socket, sys
proto, address, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
answers = collections.Counter()
for _ in range(count):
    if proto == "tcp":
        with socket.create_connection((address, port), timeout=5) as conn:
            answers[conn.makefile().read().strip()] += 1
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"?", (address, port))
            answers[sock.recv(100).decode()] += 1
print(json.dumps(answers))
"""

_CONNECT = """
import json, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    outcome = "connected"
except ConnectionRefusedError:
    outcome = "refused"
except OSError as exc:
    outcome = type(exc).__name__
print(json.dumps(outcome))
"""

# The node's own service on every address, port NO_LISTENER: echoes what it reads.
_NODE_ECHO = """
import socketserver, sys

class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
            self.wfile.flush()

socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), Echo).serve_forever()
"""

# A connection made to the VIP before the mesh had it: echo once, wait for a line on stdin, try again.
_EARLY_CONNECTION = """
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
conn.sendall(b"before\\n")
print(conn.makefile().readline().strip(), flush=True)
sys.stdin.readline()
conn.settimeout(2)
conn.sendall(b"after\\n")
try:
    print(conn.recv(100).decode().strip() or "closed", flush=True)
except TimeoutError:
    print("no answer", flush=True)
"""


# One ICMP echo request (there is no ping binary on this machine); prints the type of the answer (0: echo reply).
_PING = """
import socket, struct, sys

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

request = struct.pack("!BBHHH", 8, 0, 0, 0x5357, 1) + b"mesh"
request = request[:2] + struct.pack("!H", checksum(request)) + request[4:]
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
    sock.settimeout(5)
    sock.sendto(request, (sys.argv[1], 0))
    while True:
        reply, source = sock.recvfrom(200)
        icmp = reply[(reply[0] & 0x0F) * 4:]
        if source[0] == sys.argv[1] and icmp[0] != 8:
            print(icmp[0])
            break
"""


@pytest.fixture
def topology() -> Iterator[Topology]:
    created: list[str] = []
    servers: list[subprocess.Popen[str]] = []
    try:
        topo = Topology(node=f"{PREFIX}nd", client=f"{PREFIX}cl")
        _add_netns(topo.node, created)
        _add_netns(topo.client, created)
        _run("ip", "netns", "exec", topo.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _link(topo.node, NODE_IP, topo.client, CLIENT_IP)
        # The VIP is a local address of the node, as the agent configures it on an overlay bridge.
        _run("ip", "-n", topo.node, "addr", "add", f"{VIP}/32", "dev", f"to-{topo.client[-2:]}")
        _run("ip", "-n", topo.client, "route", "add", "default", "via", NODE_IP)
        for n in range(3):
            name, address = f"{PREFIX}b{n}", f"10.201.1{n}.2"
            _add_netns(name, created)
            _link(topo.node, f"10.201.1{n}.1", name, address)
            servers.append(_start_python_in(name, _BACKEND, name, address, ",".join(map(str, TCP_PORTS)),
                                            str(UDP_PORT)))
            topo.backends[name] = address
        for port in TCP_PORTS:
            _python_in(topo.node, _WAIT_FOR_PORTS, str(port), *topo.backends.values())
        yield topo
    finally:
        for server in servers:
            _stop(server)
        for name in reversed(created):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _shares(topo: Topology, address: str, port: int, count: int, netns: str | None = None,
            proto: str = "tcp") -> dict[str, int]:
    return json.loads(_python_in(netns or topo.client, _ASK, proto, address, str(port), str(count)))


def _connect(topo: Topology, address: str, port: int) -> str:
    return json.loads(_python_in(topo.client, _CONNECT, address, str(port)))


def _assert_even(shares: dict[str, int], backends: list[str], port: int, count: int) -> None:
    """Every answer came from one of `backends` on `port`, and each backend got a fair share."""
    want = {f"{name} {port}" for name in backends}
    assert set(shares) == want, shares
    assert sum(shares.values()) == count
    # numgen random: each share is binomial; 0.6 of the fair share is more than 5 standard deviations away.
    for answer in want:
        assert shares[answer] >= 0.6 * count / len(backends), shares


def test_vip_forwards_every_port_and_published_port_balances(topology: Topology) -> None:
    mesh = topology.mesh()
    names = sorted(topology.backends)
    mesh.full(mesh_state(topology.service(*names)))
    count = 240
    # The VIP declares no port: each port reaches the same port of a backend, spread over all of them.
    for port in TCP_PORTS:
        _assert_even(_shares(topology, VIP, port, count), names, port, count)
    _assert_even(_shares(topology, VIP, UDP_PORT, count, proto="udp"), names, UDP_PORT, count)
    # The published port goes to the target port.
    _assert_even(_shares(topology, NODE_IP, PUBLISHED, count), names, 80, count)
    # The output hook: the node itself, dialling its own published port and the VIP. (Its connections to the
    # VIP come from the VIP; the replies, addressed to the VIP, pass the input guard.)
    _assert_even(_shares(topology, NODE_IP, PUBLISHED, count, netns=topology.node), names, 80, count)
    _assert_even(_shares(topology, VIP, 7000, count, netns=topology.node), names, 7000, count)


def test_vip_connections_are_masqueraded_even_to_local_backend_interfaces(topology: Topology) -> None:
    # Replies of backends behind `local_backend_ifaces` are expected to come back through the node, so published
    # connections keep the client's address; VIP clients sit on the backends' own network (here the backends
    # have no route to the client), and only masquerading brings their replies back through the node.
    links = tuple(f"to-{name[-2:]}" for name in topology.backends)
    mesh = topology.mesh(local_backend_ifaces=links)
    names = sorted(topology.backends)
    mesh.full(mesh_state(topology.service(*names)))
    _assert_even(_shares(topology, VIP, 80, 120), names, 80, 120)
    assert _connect(topology, NODE_IP, PUBLISHED) == "TimeoutError"


def test_a_vip_port_without_listener_is_refused_by_the_backend_not_the_host(topology: Topology) -> None:
    echo = _start_python_in(topology.node, _NODE_ECHO, str(NO_LISTENER))
    early: subprocess.Popen[str] | None = None
    try:
        # The mesh runs (and with it conntrack) but does not know the service yet, while the VIP is already an
        # address of the node: its own socket answers there. The setup can tell the two apart.
        mesh = topology.mesh()
        mesh.full({})
        _python_in(topology.node, _WAIT_FOR_PORTS, str(NO_LISTENER), VIP)
        assert _connect(topology, VIP, NO_LISTENER) == "connected"
        early = _start_python_in(topology.client, _EARLY_CONNECTION, VIP, str(NO_LISTENER))
        assert early.stdout is not None and early.stdin is not None
        assert early.stdout.readline().strip() == "before"

        mesh.apply(mesh_state(topology.service(*topology.backends)))
        # A new connection goes to a backend, which has nothing on that port.
        assert _connect(topology, VIP, NO_LISTENER) == "refused"
        # A connection opened before the mesh had the VIP is not NATed (conntrack keeps its first verdict): the
        # input guard keeps it from the host's socket from now on.
        early.stdin.write("go\n")
        early.stdin.flush()
        answer = early.stdout.readline().strip()
        assert answer == "no answer", answer or early.communicate()[1]
        # Ping to the VIP is still answered by the node.
        assert _python_in(topology.client, _PING, VIP).strip() == "0"
        # The published port is untouched by the VIP's rules.
        assert _shares(topology, NODE_IP, PUBLISHED, 10).keys() <= {f"{n} 80" for n in topology.backends}
    finally:
        if early is not None:
            _stop(early)
        _stop(echo)


def test_incremental_change_equals_full_rebuild_and_no_backend_refuses(topology: Topology) -> None:
    mesh = topology.mesh()
    names = sorted(topology.backends)
    mesh.full(mesh_state(topology.service(*names)))

    # One backend leaves: only the service's chains are rewritten, and the result is what a rebuild gives.
    remaining = names[:2]
    mesh.apply(mesh_state(topology.service(*remaining)))
    incremental = normalised_listing(mesh.listing() or {})
    for port in TCP_PORTS:
        _assert_even(_shares(topology, VIP, port, 120), remaining, port, 120)
    _assert_even(_shares(topology, NODE_IP, PUBLISHED, 120), remaining, 80, 120)
    mesh.full(mesh_state(topology.service(*remaining)))
    assert incremental == normalised_listing(mesh.listing() or {})

    # A restarted agent adopts the table and converges it.
    restarted = topology.mesh()
    restarted.reconcile_on_start(mesh_state(topology.service(names[0])))
    adopted = normalised_listing(restarted.listing() or {})
    restarted.full(mesh_state(topology.service(names[0])))
    assert adopted == normalised_listing(restarted.listing() or {})
    assert _shares(topology, NODE_IP, PUBLISHED, 20) == {f"{names[0]} 80": 20}
    assert _shares(topology, VIP, 7000, 20) == {f"{names[0]} 7000": 20}

    # No backend left: refused (a reset, not a timeout), on any port of the VIP.
    restarted.apply(mesh_state(topology.service()))
    for address, port in ((NODE_IP, PUBLISHED), (VIP, 80), (VIP, 7000)):
        assert _connect(topology, address, port) == "refused", (address, port)


# The table as the agent before VIPs forwarded every port rendered it (VIP map keyed by address, protocol and
# port; no guard set, no input chain), for the service of `Topology.service` with backends 0 and 1.
_PREVIOUS_LAYOUT = """table ip swarm_mesh {{}}
delete table ip swarm_mesh
table ip swarm_mesh {{
\tmap vip_services {{
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\telements = {{ {vip} . tcp . 80 : goto svc_web_tcp_80 }}
\t}}
\tmap published_services {{
\t\ttype inet_proto . inet_service : verdict
\t\telements = {{ tcp . 8080 : goto svc_web_tcp_80 }}
\t}}
\tset local_backend_ifaces {{
\t\ttype ifname
\t}}
\tchain prerouting {{
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tip daddr . meta l4proto . th dport vmap @vip_services
\t\tfib daddr type local meta l4proto . th dport vmap @published_services
\t}}
\tchain output {{
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr . meta l4proto . th dport vmap @vip_services
\t\tfib daddr type local meta l4proto . th dport vmap @published_services
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority 100; policy accept;
\t\tmeta mark & 0x00400000 == 0 return
\t\tmeta mark set meta mark xor 0x00400000
\t\tct status dnat oifname != @local_backend_ifaces masquerade fully-random
\t}}
\tchain svc_web_tcp_80 {{
\t\tmeta mark set meta mark or 0x00400000 comment "swarm:976f766a44f862e8"
\t\tmeta l4proto tcp dnat to numgen random mod 2 map {{ 0 : {b0}, 1 : {b1} }} : 80
\t}}
}}
"""


def test_a_table_of_the_previous_layout_is_replaced_by_a_full_rebuild(topology: Topology) -> None:
    names = sorted(topology.backends)
    script = _PREVIOUS_LAYOUT.format(vip=VIP, b0=topology.backends[names[0]], b1=topology.backends[names[1]])
    subprocess.run(["ip", "netns", "exec", topology.node, "nft", "-f", "-"], input=script, text=True, check=True)
    # The previous agent's table serves the VIP on its one declared port only.
    _assert_even(_shares(topology, VIP, 80, 120), names[:2], 80, 120)
    assert _connect(topology, VIP, 7000) == "refused"  # the node's, since nothing DNATs port 7000

    restarted = topology.mesh()
    restarted.reconcile_on_start(mesh_state(topology.service(*names)))
    adopted = normalised_listing(restarted.listing() or {})
    assert "map:vip_services" in adopted and adopted["map:vip_services"]["type"] == "ipv4_addr"
    _assert_even(_shares(topology, VIP, 7000, 120), names, 7000, 120)
    restarted.full(mesh_state(topology.service(*names)))
    assert adopted == normalised_listing(restarted.listing() or {})


def test_removing_the_service_leaves_nothing_of_it(topology: Topology) -> None:
    mesh = topology.mesh()
    mesh.full(mesh_state(topology.service(*topology.backends)))
    mesh.apply({})
    listing = normalised_listing(mesh.listing() or {})
    assert not [key for key in listing if "svc_" in key]
    assert all("elem" not in item for key, item in listing.items() if key.startswith(("map:", "set:")))
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
    used_vips: set[str] = set()
    for number, sid in enumerate(draw(st.lists(st.sampled_from(_IDS), unique=True, max_size=4))):
        frontends = draw(st.lists(st.builds(Frontend, st.sampled_from(["tcp", "udp"]), st.integers(1, 4),
                                            st.integers(1, 3)), max_size=2))
        backends = draw(st.lists(st.builds(Backend, st.sampled_from([f"10.0.0.{i}" for i in range(1, 6)])),
                                 max_size=4))
        published = tuple({(f.proto, f.port): Frontend(f.proto, 100 * (number + 1) + f.port, f.target_port)
                           for f in frontends}.values())
        # A VIP may pass from one service to another between two states, never be held by two at once.
        vips = tuple(v for v in draw(st.lists(st.sampled_from([f"10.9.0.{i}" for i in range(1, 5)]), unique=True,
                                              max_size=2)) if v not in used_vips)
        used_vips.update(vips)
        services.append(MeshService(sid, vips, published, tuple(backends)))
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
                                   backends=(Backend("10.0.1.2"),)))
    code = (
        "import json, sys\n"
        "from swarm_agent.net.mesh.ipvs import IpvsMesh\n"
        "from swarm_agent.net.mesh.model import *\n"
        "mesh = IpvsMesh()\n"
        "mesh.apply(mesh_state(MeshService('web', vips=('10.9.0.2',), published=(Frontend('tcp', 8080, 80),),"
        " backends=(Backend('10.0.1.2'),))))\n"
        "print(json.dumps(sorted([mark, sorted([d.ip, d.port] for d in dests)]"
        " for mark, (_, dests) in mesh._current().items())))\n"
    )
    _run("ip", "netns", "add", netns)
    try:
        got = json.loads(_python_in(netns, code))
    finally:
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True, check=False)
    # The VIP's fwmark service has destinations on port 0 (every port), the published port's on the target port.
    want = sorted([s.fwmark, sorted([d.ip, d.port] for d in s.destinations)] for s in translate(state).services)
    assert got == want
    assert IpvsMesh.name == "ipvs"
