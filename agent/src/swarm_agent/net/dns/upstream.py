"""Forwarding queries for names that are not ours to the host's resolvers, over UDP and TCP."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dnslib import DNSError, DNSRecord, RCODE

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
DNS_PORT = 53
UPSTREAM_TIMEOUT = 2.0
# Answers that say "this server cannot help" rather than "the name is so": the next upstream may do better.
_TRY_NEXT = (RCODE.SERVFAIL, RCODE.REFUSED, RCODE.NOTIMP)
# How an upstream fails to answer: unreachable, silent, a cut connection, or a reply to something else.
_NO_ANSWER = (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int = DNS_PORT

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """"10.0.0.2", "10.0.0.2:5353", "fd00::1" or "[fd00::1]:5353"; ValueError names what is wrong."""
        host, port = text.strip(), DNS_PORT
        if host.startswith("["):
            host, _, rest = host[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"upstream {text!r}: expected [address]:port")
                port = _port(text, rest[1:])
        elif host.count(":") == 1:
            host, port_text = host.split(":")
            port = _port(text, port_text)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"upstream {text!r}: {host!r} is not an IP address") from None
        return cls(str(address), port)

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"upstream {text!r}: port {port_text!r} is not a number from 1 to 65535")
    return int(port_text)


def resolv_conf_options(path: Path = RESOLV_CONF) -> list[str]:
    """The ``options`` of resolv.conf, in order (none when it cannot be read)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [option for line in lines if line.split()[:1] == ["options"] for option in line.split()[1:]]


def resolv_conf_upstreams(path: Path = RESOLV_CONF) -> list[Upstream]:
    """The nameservers of resolv.conf, without loopback ones.

    A loopback resolver (systemd-resolved's 127.0.0.53, a local dnsmasq) listens in the host's namespace;
    the agent may run elsewhere, and a loopback entry may be this very resolver, which would loop.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        log.warning("no upstream resolvers: cannot read %s (%s)", path, exc)
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(fields[1].split("%")[0])
        except ValueError:
            log.warning("ignored nameserver %r in %s: not an IP address", fields[1], path)
            continue
        if address.is_loopback:
            log.info("ignored loopback nameserver %s of %s as an upstream", address, path)
            continue
        found.append(Upstream(str(address)))
    return found


def _answers(query: DNSRecord, data: bytes) -> DNSRecord | None:
    """The parsed reply when it answers this query (same id and question), else None."""
    try:
        reply = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    if not reply.header.qr or reply.header.id != query.header.id:
        return None
    asked = [(str(q.qname).lower(), q.qtype, q.qclass) for q in query.questions]
    # A truncated reply may come without its question section.
    if reply.questions and asked != [(str(q.qname).lower(), q.qtype, q.qclass) for q in reply.questions]:
        return None
    return reply


class _OneReply(asyncio.DatagramProtocol):
    """Receives datagrams on a connected socket until one answers the query."""

    def __init__(self, query: DNSRecord) -> None:
        self.query = query
        self.reply: asyncio.Future[tuple[bytes, DNSRecord]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done() and (parsed := _answers(self.query, data)) is not None:
            self.reply.set_result((data, parsed))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: this upstream is not there.
        if not self.reply.done():
            self.reply.set_exception(exc)


# The reply both as received (passed on unchanged) and parsed.
_Reply = tuple[bytes, DNSRecord]


async def _ask_udp(upstream: Upstream, data: bytes, query: DNSRecord) -> _Reply:
    loop = asyncio.get_running_loop()
    # A fresh connected socket per query: a random source port, and the kernel drops datagrams from others.
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _OneReply(query), remote_addr=(upstream.host, upstream.port), family=upstream.family)
    try:
        transport.sendto(data)
        return await protocol.reply
    finally:
        transport.close()


async def _ask_tcp(upstream: Upstream, data: bytes, query: DNSRecord) -> _Reply:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port, family=upstream.family)
    try:
        writer.write(len(data).to_bytes(2, "big") + data)  # RFC 1035 4.2.2: two-byte length prefix
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(2), "big")
        reply = await reader.readexactly(length)
    finally:
        writer.close()
    parsed = _answers(query, reply)
    if parsed is None:
        raise ValueError("reply does not answer the query")
    return reply, parsed


async def _ask(upstream: Upstream, data: bytes, query: DNSRecord, tcp: bool, udp_limit: int,
               timeout: float) -> _Reply:
    if tcp:
        return await asyncio.wait_for(_ask_tcp(upstream, data, query), timeout)
    reply = await asyncio.wait_for(_ask_udp(upstream, data, query), timeout)
    if not reply[1].header.tc:
        return reply
    log.debug("upstream %s truncated its reply for %s; asking again over TCP", upstream, query.q.qname)
    try:
        full = await asyncio.wait_for(_ask_tcp(upstream, data, query), timeout)
    except _NO_ANSWER as exc:
        log.debug("upstream %s gave no TCP answer for %s: %s", upstream, query.q.qname, exc or type(exc).__name__)
        return reply
    return full if len(full[0]) <= udp_limit else reply


async def forward(data: bytes, query: DNSRecord, upstreams: Sequence[Upstream], tcp: bool, udp_limit: int,
                  timeout: float = UPSTREAM_TIMEOUT) -> bytes | None:
    """Ask each upstream in turn, `timeout` seconds each; the first real answer, or None when none gave one.

    `tcp`: the client asked over TCP, so ask over TCP. Over UDP, a truncated reply is asked again over TCP;
    the full reply goes back when it fits `udp_limit`, otherwise the truncated one, so the client retries
    over TCP itself. A SERVFAIL or REFUSED is kept only in case no other upstream answers better.
    """
    fallback: bytes | None = None
    for upstream in upstreams:
        try:
            reply, parsed = await _ask(upstream, data, query, tcp, udp_limit, timeout)
        except _NO_ANSWER as exc:
            log.debug("upstream %s gave no answer for %s over %s: %s", upstream, query.q.qname,
                      "TCP" if tcp else "UDP", exc or type(exc).__name__)
            continue
        if parsed.header.rcode in _TRY_NEXT:
            fallback = reply
            continue
        return reply
    return fallback
