"""The resolver's sockets: one UDP socket and one TCP listener per overlay network, on its gateway address."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, DNSRecord

from .answers import TCP_MAX_SIZE, Lookup, ReverseLookup, error_reply, local_answer, pack_for, parse_query, udp_limit
from .upstream import UPSTREAM_TIMEOUT, Upstream, forward, resolv_conf_upstreams

log = logging.getLogger(__name__)

# Forwarded queries in flight per network; beyond this, queries are dropped (clients retry) rather than
# letting one chatty container pile up sockets and tasks without bound.
MAX_PENDING = 256
# A TCP client that sends nothing for this long is disconnected (RFC 7766 suggests seconds, not minutes).
TCP_IDLE_TIMEOUT = 10.0


@dataclass
class _Listener:
    network_id: str
    address: str
    port: int
    udp: asyncio.DatagramTransport | None = None
    udp_closed: asyncio.Future[None] | None = None
    tcp: asyncio.Server | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)

    def track(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: ServiceResolver, listener: _Listener) -> None:
        self.resolver = resolver
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.resolver._on_datagram(self.listener, self, data, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for a reply we sent (the client went away); nothing to do for the socket.
        log.debug("DNS socket of network %s on %s: %s", self.listener.network_id, self.listener.address, exc)


class ServiceResolver:
    """Answers containers' queries per network from `lookup`, forwards the rest to `upstreams`.

    `upstreams`: "ip" or "ip:port" strings; by default the non-loopback nameservers of /etc/resolv.conf.
    `ttl`: TTL of our answers; 0 by default, since a task's address can go away at any moment.
    `reverse`: optional (network_id, ipv4) -> name for PTR queries of our addresses.
    `client_networks`: optional (network_id, client address) -> the client's other networks, asked in that
    order when the name is not found on the network the query came in on.
    """

    def __init__(self, lookup: Lookup, upstreams: Sequence[str] | None = None, ttl: int = 0,
                 reverse: ReverseLookup | None = None, timeout: float = UPSTREAM_TIMEOUT,
                 client_networks: Callable[[str, str], Sequence[str]] | None = None) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must be 0 or more seconds, not {ttl}")
        if timeout <= 0:
            raise ValueError(f"timeout must be more than 0 seconds, not {timeout}")
        self._lookup = lookup
        self._reverse = reverse
        self._client_networks = client_networks
        self._ttl = ttl
        self._timeout = timeout
        self._upstreams = ([Upstream.parse(u) for u in upstreams] if upstreams is not None
                           else resolv_conf_upstreams())
        self._listeners: dict[str, _Listener] = {}
        log.info("DNS resolver forwards to %s", ", ".join(map(str, self._upstreams)) or "no upstream")

    @property
    def upstreams(self) -> list[Upstream]:
        """Where names that are not ours go, minus our own sockets (asking ourselves would loop)."""
        ours = {Upstream(listener.address, listener.port) for listener in self._listeners.values()}
        return [u for u in self._upstreams if u not in ours]

    def listening(self) -> dict[str, tuple[str, int]]:
        """network id -> (address, port) the resolver answers on."""
        return {n: (lst.address, lst.port) for n, lst in self._listeners.items()}

    async def listen(self, network_id: str, address: str, port: int = 53) -> tuple[str, int]:
        """Answer queries for `network_id` on address:port, UDP and TCP; returns the bound (address, port).

        Port 0 picks a free port, the same for UDP and TCP. Listening again on the same address is a no-op;
        on another address, the old sockets close once the new ones are bound. Nothing stays bound on error.
        """
        try:
            address = str(ipaddress.ip_address(address))  # one spelling, as upstreams have, for the loop check
        except ValueError:
            raise ValueError(f"DNS resolver of network {network_id}: listen address {address!r} is not an IP "
                             f"address") from None
        current = self._listeners.get(network_id)
        if current is not None and current.address == address and port in (0, current.port):
            return current.address, current.port
        listener = await self._bind(network_id, address, port)
        self._listeners[network_id] = listener
        if current is not None:
            await self._close(current)
        if Upstream(address, listener.port) in self._upstreams:
            log.warning("DNS resolver of network %s listens on %s:%d, an upstream: not forwarding there",
                        network_id, address, listener.port)
        log.info("DNS resolver answers network %s on %s port %d (UDP and TCP)", network_id, address, listener.port)
        return listener.address, listener.port

    async def unlisten(self, network_id: str) -> None:
        """Stop answering for `network_id`; queries being forwarded for it are abandoned. Unknown ids are fine."""
        listener = self._listeners.pop(network_id, None)
        if listener is not None:
            await self._close(listener)
            log.info("DNS resolver stopped answering network %s on %s port %d", network_id, listener.address,
                     listener.port)

    async def close(self) -> None:
        for network_id in list(self._listeners):
            await self.unlisten(network_id)

    # -- sockets ---------------------------------------------------------------------------------------------

    async def _bind(self, network_id: str, address: str, port: int) -> _Listener:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = _Listener(network_id, address, port)
        try:
            listener.udp, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, listener), local_addr=(address, port), family=family)
            listener.udp_closed = protocol.closed
            listener.port = listener.udp.get_extra_info("sockname")[1]
            listener.tcp = await asyncio.start_server(
                lambda r, w: self._serve_tcp(listener, r, w), address, listener.port, family=family)
        except OSError as exc:
            await self._close(listener)
            raise OSError(exc.errno, f"DNS resolver of network {network_id} cannot listen on {address} port "
                                     f"{port}: {exc.strerror}") from exc
        return listener

    async def _close(self, listener: _Listener) -> None:
        if listener.udp is not None:
            listener.udp.close()
        if listener.tcp is not None:
            listener.tcp.close()
        for task in list(listener.tasks):
            task.cancel()
        await asyncio.gather(*listener.tasks, return_exceptions=True)
        # The transport closes its socket on a later turn of the loop: the port is free only after that.
        if listener.udp_closed is not None:
            await listener.udp_closed
        if listener.tcp is not None:
            await listener.tcp.wait_closed()

    # -- queries ---------------------------------------------------------------------------------------------

    def _on_datagram(self, listener: _Listener, protocol: _UdpProtocol, data: bytes, addr: tuple) -> None:
        query = parse_query(data)
        if query is None:
            return
        reply = self._local(listener, query, addr[0])
        if reply is not None:
            protocol.transport.sendto(pack_for(reply, udp_limit(query)), addr)
            return
        if len(listener.tasks) >= MAX_PENDING:
            log.debug("DNS resolver of network %s dropped a query for %s from %s: %d forwards in flight",
                      listener.network_id, query.q.qname, addr[0], len(listener.tasks))
            return
        listener.track(asyncio.get_running_loop().create_task(
            self._forward_udp(listener, protocol, data, query, addr)))

    async def _forward_udp(self, listener: _Listener, protocol: _UdpProtocol, data: bytes, query: DNSRecord,
                           addr: tuple) -> None:
        limit = udp_limit(query)
        reply = await forward(data, query, self.upstreams, tcp=False, udp_limit=limit, timeout=self._timeout)
        if protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.sendto(reply if reply is not None else self._servfail(listener, query, limit),
                                      addr)

    async def _serve_tcp(self, listener: _Listener, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            listener.track(task)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT), "big")
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                query = parse_query(data)
                if query is None:
                    return  # the stream cannot be trusted past a malformed message
                reply = await self._answer_tcp(listener, data, query, peer[0])
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
            log.debug("DNS TCP connection from %s on network %s ended: %s", peer, listener.network_id,
                      type(exc).__name__)
        finally:
            writer.close()

    async def _answer_tcp(self, listener: _Listener, data: bytes, query: DNSRecord, client: str) -> bytes:
        reply = self._local(listener, query, client)
        if reply is not None:
            return pack_for(reply, TCP_MAX_SIZE)
        forwarded = await forward(data, query, self.upstreams, tcp=True, udp_limit=TCP_MAX_SIZE,
                                  timeout=self._timeout)
        return forwarded if forwarded is not None else self._servfail(listener, query, TCP_MAX_SIZE)

    def _local(self, listener: _Listener, query: DNSRecord, client: str) -> DNSRecord | None:
        try:
            others = self._client_networks(listener.network_id, client) if self._client_networks else ()
            for network_id in (listener.network_id, *others):
                reply = local_answer(query, network_id, self._lookup, self._reverse, self._ttl)
                if reply is not None:
                    break
        except Exception:  # noqa: BLE001 - the consumer's lookup failing must not take the resolver down
            log.exception("DNS lookup of %s on network %s failed; answering SERVFAIL", query.q.qname,
                          listener.network_id)
            return error_reply(query, RCODE.SERVFAIL)
        qtype = QTYPE.get(query.q.qtype)
        if reply is None:
            log.debug("DNS %s %s from %s on network %s: not ours, forwarded", qtype, query.q.qname, client,
                      listener.network_id)
        else:
            log.debug("DNS %s %s from %s on network %s: %s with %d records", qtype, query.q.qname, client,
                      listener.network_id, RCODE.get(reply.header.rcode), len(reply.rr))
        return reply

    def _servfail(self, listener: _Listener, query: DNSRecord, limit: int) -> bytes:
        log.info("DNS resolver of network %s answers SERVFAIL for %s: no upstream answered (%s)",
                 listener.network_id, query.q.qname, ", ".join(map(str, self.upstreams)) or "none configured")
        return pack_for(error_reply(query, RCODE.SERVFAIL), limit)
