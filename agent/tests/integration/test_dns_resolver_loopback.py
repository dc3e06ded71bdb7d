"""The service resolver on real loopback sockets, forwarding to a real (small, dnslib) upstream server.

Addresses: the resolver's networks on 127.0.53.1 and 127.0.53.2, the upstream on 127.0.54.1, all on free
ports picked by the kernel, so that concurrent runs do not collide.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import contextmanager
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from swarm_agent.net.dns import ServiceResolver

pytestmark = pytest.mark.integration

NET_A, NET_B = "net-a", "net-b"
ADDRESS_A, ADDRESS_B = "127.0.53.1", "127.0.53.2"
UPSTREAM_ADDRESS = "127.0.54.1"
TABLE = {
    (NET_A, "web"): ["10.0.1.10"],
    (NET_A, "tasks.web"): ["10.0.1.21", "10.0.1.22", "10.0.1.23"],
    (NET_A, "idle"): [],
    (NET_B, "web"): ["10.0.2.10"],
}
OUTSIDE = {  # the upstream's names
    "outside.test": ["192.0.2.7"],
    "small-but-truncated.test": ["192.0.2.11", "192.0.2.12", "192.0.2.13"],
    "huge.test": [f"192.0.2.{i}" for i in range(1, 101)],  # 100 records: more than 512 bytes
}


def lookup(network_id: str, name: str) -> Sequence[str] | None:
    return TABLE.get((network_id, name))


def reverse(network_id: str, address: str) -> str | None:
    return "web.1.task1" if (network_id, address) == (NET_A, "10.0.1.21") else None


@dataclass
class FakeUpstream:
    """A real DNS server on UDP and TCP answering OUTSIDE; it records what it was asked, and how."""
    asked: Counter[tuple[str, str]] = field(default_factory=Counter)  # (name, "udp"|"tcp") -> count
    port: int = 0
    broken: bool = False  # answers SERVFAIL to everything
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        name = str(request.q.qname).lower().rstrip(".")
        with self.lock:
            self.asked[(name, handler.protocol)] += 1
        reply = request.reply(ra=1, aa=1)
        if self.broken:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if name not in OUTSIDE:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype == QTYPE.A:
            for address in OUTSIDE[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A(address)))
        if name == "small-but-truncated.test" and handler.protocol == "udp":
            return reply.truncate()  # as a server with a small UDP limit would
        return reply


class _Handler(DNSHandler):
    udplen = 512  # dnslib's server then truncates UDP replies that are larger, as real servers do


@contextmanager
def running_upstream(broken: bool = False) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(broken=broken)
    resolver = type("R", (BaseResolver,), {"resolve": lambda self, request, handler: fake.resolve(request, handler)})()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    udp = DNSServer(resolver, address=UPSTREAM_ADDRESS, port=0, logger=quiet, handler=_Handler)
    fake.port = udp.server.server_address[1]
    tcp = DNSServer(resolver, address=UPSTREAM_ADDRESS, port=fake.port, tcp=True, logger=quiet, handler=_Handler)
    threads = [threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
               for server in (udp, tcp)]
    for thread in threads:
        thread.start()
    try:
        yield fake
    finally:
        for server in (udp, tcp):
            server.server.shutdown()
            server.server.server_close()
        for thread in threads:
            thread.join()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as fake:
        yield fake


@pytest.fixture
async def resolver(upstream: FakeUpstream) -> AsyncIterator[ServiceResolver]:
    service = ServiceResolver(lookup, upstreams=[f"{UPSTREAM_ADDRESS}:{upstream.port}"], reverse=reverse)
    try:
        await service.listen(NET_A, ADDRESS_A, 0)
        await service.listen(NET_B, ADDRESS_B, 0)
        yield service
    finally:
        await service.close()


async def ask(resolver: ServiceResolver, network: str, name: str, qtype: str = "A", tcp: bool = False,
              timeout: float = 10) -> DNSRecord:
    address, port = resolver.listening()[network]
    query = DNSRecord.question(name, qtype)
    data = await asyncio.to_thread(query.send, address, port, tcp=tcp, timeout=timeout)
    reply = DNSRecord.parse(data)
    assert reply.header.id == query.header.id
    return reply


def addresses(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)


async def test_a_query_answers_our_addresses_without_asking_upstream(resolver: ServiceResolver,
                                                                    upstream: FakeUpstream) -> None:
    reply = await ask(resolver, NET_A, "tasks.web")
    assert reply.header.rcode == RCODE.NOERROR
    assert addresses(reply) == ["10.0.1.21", "10.0.1.22", "10.0.1.23"]
    assert addresses(await ask(resolver, NET_A, "WEB")) == ["10.0.1.10"]
    assert not upstream.asked


async def test_aaaa_and_unknown_types_of_our_names_are_empty_noerror(resolver: ServiceResolver,
                                                                    upstream: FakeUpstream) -> None:
    for qtype in ("AAAA", "MX", "CAA"):
        reply = await ask(resolver, NET_A, "web", qtype)
        assert reply.header.rcode == RCODE.NOERROR and reply.rr == [], qtype
    reply = await ask(resolver, NET_A, "idle")
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert not upstream.asked


async def test_other_names_are_forwarded_and_unknown_ones_fail_cleanly(resolver: ServiceResolver,
                                                                       upstream: FakeUpstream) -> None:
    reply = await ask(resolver, NET_A, "outside.test")
    assert reply.header.rcode == RCODE.NOERROR and addresses(reply) == ["192.0.2.7"]
    missing = await ask(resolver, NET_A, "nowhere.test")
    assert missing.header.rcode == RCODE.NXDOMAIN
    # A name of another network is not ours here: it goes upstream, which does not know it.
    assert (await ask(resolver, NET_B, "tasks.web")).header.rcode == RCODE.NXDOMAIN
    assert upstream.asked == Counter({("outside.test", "udp"): 1, ("nowhere.test", "udp"): 1,
                                      ("tasks.web", "udp"): 1})


async def test_tcp_clients_are_answered_and_forwarded_over_tcp(resolver: ServiceResolver,
                                                               upstream: FakeUpstream) -> None:
    assert addresses(await ask(resolver, NET_A, "tasks.web", tcp=True)) == ["10.0.1.21", "10.0.1.22", "10.0.1.23"]
    reply = await ask(resolver, NET_A, "huge.test", tcp=True)
    assert reply.header.tc == 0 and addresses(reply) == sorted(OUTSIDE["huge.test"])
    assert upstream.asked == Counter({("huge.test", "tcp"): 1})


async def test_several_queries_on_one_tcp_connection(resolver: ServiceResolver) -> None:
    address, port = resolver.listening()[NET_A]
    reader, writer = await asyncio.open_connection(address, port)
    try:
        queries = [DNSRecord.question(name) for name in ("web", "tasks.web", "outside.test")]
        for query in queries:
            data = query.pack()
            writer.write(len(data).to_bytes(2, "big") + data)
        await writer.drain()
        replies = []
        for _ in queries:
            length = int.from_bytes(await reader.readexactly(2), "big")
            replies.append(DNSRecord.parse(await reader.readexactly(length)))
    finally:
        writer.close()
    assert [r.header.id for r in replies] == [q.header.id for q in queries]
    assert [addresses(r) for r in replies] == [["10.0.1.10"], ["10.0.1.21", "10.0.1.22", "10.0.1.23"],
                                               ["192.0.2.7"]]


async def test_truncated_upstream_reply_is_fetched_again_over_tcp(resolver: ServiceResolver,
                                                                  upstream: FakeUpstream) -> None:
    # Fits the client's 512 bytes: the client gets the whole answer over UDP.
    reply = await ask(resolver, NET_A, "small-but-truncated.test")
    assert reply.header.tc == 0 and addresses(reply) == sorted(OUTSIDE["small-but-truncated.test"])
    assert upstream.asked == Counter({("small-but-truncated.test", "udp"): 1,
                                      ("small-but-truncated.test", "tcp"): 1})
    # Does not fit: the client is told to retry over TCP, as it would be by the upstream itself.
    reply = await ask(resolver, NET_A, "huge.test")
    assert reply.header.tc == 1


async def test_too_many_of_our_addresses_for_udp_are_truncated(upstream: FakeUpstream) -> None:
    many = [f"10.9.{i // 200}.{i % 200 + 1}" for i in range(400)]
    service = ServiceResolver(lambda _n, name: many if name == "big" else None, upstreams=[])
    try:
        await service.listen(NET_A, ADDRESS_A, 0)
        udp = await ask(service, NET_A, "big")
        assert udp.header.tc == 1 and 0 < len(udp.rr) < 400
        tcp = await ask(service, NET_A, "big", tcp=True)
        assert tcp.header.tc == 0 and addresses(tcp) == sorted(many)
    finally:
        await service.close()


async def test_two_networks_answer_from_their_own_tables(resolver: ServiceResolver) -> None:
    assert addresses(await ask(resolver, NET_A, "web")) == ["10.0.1.10"]
    assert addresses(await ask(resolver, NET_B, "web")) == ["10.0.2.10"]
    assert addresses(await ask(resolver, NET_B, "web", tcp=True)) == ["10.0.2.10"]


async def test_unlisten_closes_both_sockets_of_that_network_only(resolver: ServiceResolver) -> None:
    address, port = resolver.listening()[NET_B]
    await resolver.unlisten(NET_B)
    assert NET_B not in resolver.listening()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(ConnectionRefusedError):
        # UDP: the kernel answers port unreachable, which a connected socket reports on its next receive.
        sock.settimeout(10)
        sock.connect((address, port))
        sock.send(DNSRecord.question("web").pack())
        sock.recv(512)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(address, port)
    assert addresses(await ask(resolver, NET_A, "web")) == ["10.0.1.10"]
    await resolver.unlisten(NET_B)  # twice is fine
    # And the network can come back, here on a new port.
    await resolver.listen(NET_B, ADDRESS_B, 0)
    assert addresses(await ask(resolver, NET_B, "web")) == ["10.0.2.10"]


def _silent_udp_socket() -> socket.socket:
    """An upstream that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((UPSTREAM_ADDRESS, 0))
    return sock


def _closed_port(address: str = UPSTREAM_ADDRESS) -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


async def test_upstream_down_gives_servfail_and_a_silent_one_is_skipped(upstream: FakeUpstream) -> None:
    with _silent_udp_socket() as silent:
        silent_at = f"{UPSTREAM_ADDRESS}:{silent.getsockname()[1]}"
        down_at = f"{UPSTREAM_ADDRESS}:{_closed_port()}"
        dead = ServiceResolver(lookup, upstreams=[down_at, silent_at], timeout=0.5)
        fallback = ServiceResolver(lookup, upstreams=[silent_at, down_at, f"{UPSTREAM_ADDRESS}:{upstream.port}"],
                                   timeout=0.5)
        try:
            await dead.listen(NET_A, ADDRESS_A, 0)
            await fallback.listen(NET_B, ADDRESS_B, 0)
            for tcp in (False, True):
                reply = await ask(dead, NET_A, "outside.test", tcp=tcp)
                assert reply.header.rcode == RCODE.SERVFAIL and reply.rr == []
                # Our own names do not need an upstream.
                assert addresses(await ask(dead, NET_A, "web", tcp=tcp)) == ["10.0.1.10"]
                reply = await ask(fallback, NET_B, "outside.test", tcp=tcp)
                assert reply.header.rcode == RCODE.NOERROR and addresses(reply) == ["192.0.2.7"]
            silent.setblocking(False)
            assert silent.recv(512)  # the silent upstream was asked, and skipped after its timeout
        finally:
            await dead.close()
            await fallback.close()


async def test_the_resolver_never_forwards_to_itself(upstream: FakeUpstream) -> None:
    port = _closed_port(ADDRESS_A)
    # The configuration names the resolver's own socket (as a resolv.conf pointing at the gateway would).
    service = ServiceResolver(lookup, upstreams=[f"{ADDRESS_A}:{port}"])
    try:
        await service.listen(NET_A, ADDRESS_A, port)
        assert service.upstreams == []
        assert (await ask(service, NET_A, "outside.test")).header.rcode == RCODE.SERVFAIL
    finally:
        await service.close()


async def test_malformed_packets_are_dropped_and_the_server_keeps_answering(resolver: ServiceResolver) -> None:
    address, port = resolver.listening()[NET_A]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\x00", b"\xff" * 40, DNSRecord.question("web").pack()[:20],
                     DNSRecord.question("web").reply().pack()):
            sock.sendto(junk, (address, port))
    # A malformed TCP message ends its connection.
    reader, writer = await asyncio.open_connection(address, port)
    writer.write(b"\x00\x05hello")
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    assert addresses(await ask(resolver, NET_A, "web")) == ["10.0.1.10"]
    assert addresses(await ask(resolver, NET_A, "web", tcp=True)) == ["10.0.1.10"]


async def test_a_failing_lookup_gives_servfail_and_the_server_keeps_answering(upstream: FakeUpstream) -> None:
    def broken(network_id: str, name: str) -> Sequence[str] | None:
        if name == "boom":
            raise RuntimeError("table is broken")
        return lookup(network_id, name)

    service = ServiceResolver(broken, upstreams=[])
    try:
        await service.listen(NET_A, ADDRESS_A, 0)
        assert (await ask(service, NET_A, "boom")).header.rcode == RCODE.SERVFAIL
        assert addresses(await ask(service, NET_A, "web")) == ["10.0.1.10"]
    finally:
        await service.close()


async def test_listening_on_an_address_in_use_fails_with_the_network_named(resolver: ServiceResolver) -> None:
    _, port = resolver.listening()[NET_A]
    other = ServiceResolver(lookup, upstreams=[])
    try:
        with pytest.raises(OSError, match=f"network net-c cannot listen on {ADDRESS_A} port {port}"):
            await other.listen("net-c", ADDRESS_A, port)
        assert other.listening() == {}
    finally:
        await other.close()


async def test_a_servfail_upstream_is_passed_over_for_the_next(upstream: FakeUpstream) -> None:
    with running_upstream(broken=True) as broken:
        alone = ServiceResolver(lookup, upstreams=[f"{UPSTREAM_ADDRESS}:{broken.port}"])
        both = ServiceResolver(lookup, upstreams=[f"{UPSTREAM_ADDRESS}:{broken.port}",
                                                  f"{UPSTREAM_ADDRESS}:{upstream.port}"])
        try:
            await alone.listen(NET_A, ADDRESS_A, 0)
            await both.listen(NET_B, ADDRESS_B, 0)
            assert (await ask(alone, NET_A, "outside.test")).header.rcode == RCODE.SERVFAIL
            assert addresses(await ask(both, NET_B, "outside.test")) == ["192.0.2.7"]
            assert broken.asked == Counter({("outside.test", "udp"): 2})
        finally:
            await alone.close()
            await both.close()


async def test_ptr_of_our_address_and_forwarding_of_others(resolver: ServiceResolver,
                                                           upstream: FakeUpstream) -> None:
    reply = await ask(resolver, NET_A, "21.1.0.10.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in reply.rr] == ["web.1.task1."]
    assert (await ask(resolver, NET_B, "21.1.0.10.in-addr.arpa", "PTR")).header.rcode == RCODE.NXDOMAIN
    assert upstream.asked == Counter({("21.1.0.10.in-addr.arpa", "udp"): 1})


async def test_bad_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="ttl must be 0 or more seconds, not -1"):
        ServiceResolver(lookup, upstreams=[], ttl=-1)
    with pytest.raises(ValueError, match="upstream 'resolver.example'"):
        ServiceResolver(lookup, upstreams=["resolver.example"])
    service = ServiceResolver(lookup, upstreams=[])
    with pytest.raises(ValueError, match="network net-a: listen address 'gateway' is not an IP address"):
        await service.listen(NET_A, "gateway", 0)
    assert service.listening() == {}


async def test_a_client_on_several_networks_finds_the_names_of_all_of_them(upstream: FakeUpstream) -> None:
    """A container asks one resolver (its first network's): names of its other networks are answered too, and
    only for that container's address; the network the query came in on is asked first."""
    client = "127.0.53.9"
    elsewhere = {(NET_B, client): [NET_A]}
    service = ServiceResolver(lookup, upstreams=[f"{UPSTREAM_ADDRESS}:{upstream.port}"],
                              client_networks=lambda network, address: elsewhere.get((network, address), []))
    try:
        address, port = await service.listen(NET_B, ADDRESS_B, 0)

        def ask_from(source: str, name: str) -> DNSRecord:
            query = DNSRecord.question(name, "A")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source, 0))
                sock.settimeout(10)
                sock.sendto(query.pack(), (address, port))
                return DNSRecord.parse(sock.recv(4096))

        assert addresses(await asyncio.to_thread(ask_from, client, "tasks.web")) == ["10.0.1.21", "10.0.1.22", "10.0.1.23"]
        assert addresses(await asyncio.to_thread(ask_from, client, "web")) == ["10.0.2.10"], "its own network first"
        assert not upstream.asked
        stranger = await asyncio.to_thread(ask_from, "127.0.53.10", "tasks.web")
        assert stranger.header.rcode == RCODE.NXDOMAIN and upstream.asked == Counter({("tasks.web", "udp"): 1})
    finally:
        await service.close()
