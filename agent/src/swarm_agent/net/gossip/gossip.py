"""A gossip node: SWIM membership with Lifeguard's refinements and replicated tables, over UDP with TCP
push-pull, every datagram and stream encrypted with the keyring.

One instance per node, in one asyncio loop. Protocol rounds:
- probe (every probe_interval, scaled by local health): ping the next member of a shuffled round robin;
  without an ack within probe_timeout, ask indirect_checks others to ping it (they nack if they get nothing
  either); without any ack by the end of the period, suspect it. A suspect refutes with a higher incarnation
  or is declared dead when its suspicion timer fires;
- gossip (every gossip_interval): send queued membership and table updates to gossip_nodes random members;
  updates also ride on pings and acks, each sent retransmit_mult * ceil(log10(n + 1)) times;
- push-pull (every push_pull_interval, on join, and when a dead member comes back): exchange the whole state
  with one member over TCP.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import random
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .broadcasts import BroadcastQueue
from .config import GossipConfig
from .keyring import OVERHEAD, AuthenticationError, Keyring
from .membership import Member, Membership, Outcome
from .messages import (
    Ack,
    Alive,
    Dead,
    EntryUpdate,
    MalformedMessage,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    decode,
    decode_packet,
    encode,
    encode_packet,
)
from .suspicion import Suspicion
from .tables import Change, Entry, TableStore
from .timing import (
    Awareness,
    expected_confirmations,
    push_pull_period,
    retransmit_limit,
    suspicion_timeout,
)
from .transport import Datagrams, parse_peer, read_frame, write_frame

log = logging.getLogger(__name__)

DEFAULT_PORT = 7946
# How often dead members and tombstones past dead_reap are forgotten (seconds).
_REAP_PERIOD = 1.0


@dataclass
class GossipStats:
    """Counters for operators and tests; dropped messages never stop the protocol."""
    datagrams_sent: int = 0
    datagrams_received: int = 0
    # Datagrams and streams no key of the ring authenticates (another cluster, a stale key, tampering).
    auth_failures: int = 0
    # Authenticated messages that were not valid gossip messages.
    malformed: int = 0
    push_pulls: int = 0
    push_pull_failures: int = 0
    # Updates too large for one datagram: they travel by push-pull only.
    oversized_updates: int = 0


@dataclass
class _Probe:
    ack: asyncio.Future[None]
    nacks: int = 0


class Gossip:
    def __init__(self, node_id: str, bind_address: str, port: int = DEFAULT_PORT, *, keyring: Keyring,
                 config: GossipConfig = GossipConfig(), advertise_address: str | None = None) -> None:
        if not isinstance(node_id, str) or not node_id or len(node_id) > 256:
            raise ValueError(f"gossip node_id {node_id!r}: expected a non-empty string of at most 256 characters")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"gossip port {port!r}: expected 0 (any free port) to 65535")
        if not isinstance(keyring, Keyring):
            raise ValueError(f"gossip keyring: expected a Keyring, got {type(keyring).__name__}")
        advertise = advertise_address or bind_address
        try:
            advertised_ip = ipaddress.ip_address(advertise)
        except ValueError:
            raise ValueError(f"gossip advertise address {advertise!r}: expected an IP address") from None
        if advertised_ip.is_unspecified:
            raise ValueError(f"gossip bind address {bind_address!r} is unspecified: give advertise_address, "
                             "the address other members reach this node at")
        self.node_id = node_id
        self.config = config
        self.stats = GossipStats()
        self._bind_address = bind_address
        self._advertise = advertise
        self._port = port
        self._keyring = keyring
        self._membership = Membership(node_id, advertise, port)
        self._store = TableStore(node_id, config.dead_reap)
        self._queue = BroadcastQueue()
        self._awareness = Awareness(config.awareness_max_mult)
        self._suspicions: dict[str, Suspicion] = {}
        self._probes: dict[int, _Probe] = {}
        # Indirect probes this node runs for others: our ping's seq -> (requester, its seq, nack timer).
        self._relays: dict[int, tuple[tuple[str, int], int, asyncio.TimerHandle]] = {}
        self._seq = itertools.count(random.randrange(1 << 30))
        self._probe_order: list[str] = []
        self._member_callbacks: list[Callable[[Member], None]] = []
        self._entry_callbacks: list[Callable[[str, str, dict[str, Any] | None], None]] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._streams: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    # Public interface

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the one the system chose for port 0)."""
        return self._port

    @property
    def address(self) -> str:
        return self._advertise

    @property
    def incarnation(self) -> int:
        return self._membership.local.incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard's local health score: 0 when healthy; timeouts are stretched by (score + 1)."""
        return self._awareness.score

    async def start(self) -> None:
        if self._loop is not None or self._stopped:
            # A node's state (incarnation, entries) belongs to one run: a restart is a new instance.
            raise RuntimeError(f"gossip node {self.node_id} is already {'stopped' if self._stopped else 'started'}")
        self._loop = asyncio.get_running_loop()
        await self._bind()
        if self._membership.local.port != self._port:
            self._membership = Membership(self.node_id, self._advertise, self._port)
        self._broadcast(("member", self.node_id), self._membership.alive_message())
        self._tasks = [asyncio.create_task(coro, name=f"gossip-{name}-{self.node_id}") for name, coro in (
            ("probe", self._probe_loop()), ("gossip", self._gossip_loop()),
            ("push-pull", self._push_pull_loop()), ("reap", self._reap_loop()))]
        log.info("gossip node %s listening on %s:%d (UDP and TCP), advertised as %s", self.node_id,
                 self._bind_address, self._port, self._advertise)

    async def join(self, addresses: Sequence[str | tuple[str, int]]) -> int:
        """Exchanges the whole state with each address ("host", "host:port" or (host, port); this node's
        port when none is given) over TCP; returns how many answered."""
        self._require_started()
        peers = [parse_peer(a, self._port) for a in addresses]
        results = await asyncio.gather(*(self._push_pull(host, port, join=True) for host, port in peers))
        answered = sum(results)
        log.info("gossip node %s joined through %d of %d addresses", self.node_id, answered, len(peers))
        return answered

    async def leave(self) -> None:
        """Tells the others this node leaves (they mark it "left" and drop its entries), then stops."""
        self._require_started()
        message = self._membership.leave(self._now())
        self._broadcast(("member", self.node_id), message)
        # Straight to every member as well: gossip alone might not have run before the sockets close.
        for member in self._membership.probe_candidates():
            self._send(member, [encode(message)])
        await asyncio.sleep(self.config.gossip_interval * 3)
        log.info("gossip node %s left the cluster", self.node_id)
        await self.stop()

    async def stop(self) -> None:
        """Stops at once without telling anyone, as a crash would."""
        tasks, self._tasks = self._tasks + list(self._streams), []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for suspicion in self._suspicions.values():
            suspicion.cancel()
        self._suspicions.clear()
        for _, _, timer in self._relays.values():
            timer.cancel()
        self._relays.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            # Closes the listening socket now; a push-pull still being served ends with its timeout.
            self._tcp.close()
            self._tcp = None
        self._loop = None
        self._stopped = True
        # Let the transports close their sockets, so that the port can be bound again at once.
        await asyncio.sleep(0)

    def set_keyring(self, keyring: Keyring) -> None:
        if not isinstance(keyring, Keyring):
            raise ValueError(f"gossip keyring: expected a Keyring, got {type(keyring).__name__}")
        self._keyring = keyring
        log.info("gossip node %s keyring replaced: %r", self.node_id, keyring)

    def members(self) -> list[Member]:
        return self._membership.members()

    def on_member(self, callback: Callable[[Member], None]) -> None:
        """`callback(member)` on every change of a member's state or address (join, suspect, alive again,
        dead, left), this node's own changes excluded."""
        self._member_callbacks.append(callback)

    def put(self, table: str, key: str, value: dict[str, Any]) -> None:
        update, change = self._store.put(table, key, value)
        self._broadcast(("entry", table, key), update)
        self._emit_entry(change)

    def delete(self, table: str, key: str) -> None:
        written = self._store.delete(table, key, self._now())
        if written is not None:
            update, change = written
            self._broadcast(("entry", table, key), update)
            self._emit_entry(change)

    def entries(self, table: str) -> dict[str, Entry]:
        return self._store.entries(table)

    def on_entry(self, callback: Callable[[str, str, dict[str, Any] | None], None]) -> None:
        """`callback(table, key, value)` whenever an entry appears, changes or goes (value None), local
        writes included, and for every entry of a member that dies or leaves."""
        self._entry_callbacks.append(callback)

    # Sockets

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        # Port 0: UDP picks a free port and TCP must get the same one, which another program may hold.
        for attempt in range(20 if self._port == 0 else 1):
            udp, _ = await loop.create_datagram_endpoint(lambda: Datagrams(self.node_id, self._datagram),
                                                         local_addr=(self._bind_address, self._port))
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_stream, self._bind_address, port)
            except OSError:
                udp.close()
                if self._port == 0:
                    continue
                raise
            self._udp, self._port = udp, port
            return
        raise OSError(f"gossip node {self.node_id}: found no port free for both UDP and TCP on "
                      f"{self._bind_address}")

    def _send(self, member: Member | tuple[str, int], messages: list[bytes]) -> None:
        """Sends one datagram: `messages` first, then queued updates in the room left."""
        if self._udp is None:
            return
        address = (member.address, member.port) if isinstance(member, Member) else member
        budget = self.config.max_packet_size - OVERHEAD - 2 - sum(len(m) + 1 for m in messages)
        limit = retransmit_limit(self.config.retransmit_mult, self._membership.live_count())
        payload = encode_packet(messages + self._queue.take(budget, limit))
        try:
            self._udp.sendto(self._keyring.encrypt(payload), address)
            self.stats.datagrams_sent += 1
        except OSError as exc:
            log.debug("gossip node %s could not send to %s:%d: %s", self.node_id, address[0], address[1], exc)

    def _broadcast(self, about: Hashable, message: Message) -> None:
        encoded = encode(message)
        if len(encoded) + 1 > self.config.max_packet_size - OVERHEAD - 2:
            self.stats.oversized_updates += 1
            log.warning("gossip update about %s is %d bytes, too large for a datagram: it spreads by push-pull "
                        "only", about, len(encoded))
            return
        self._queue.push(about, encoded)

    # Receiving

    def _datagram(self, data: bytes, source: tuple[str, int]) -> None:
        self.stats.datagrams_received += 1
        try:
            payload = self._keyring.decrypt(data)
        except AuthenticationError as exc:
            self.stats.auth_failures += 1
            log.debug("gossip node %s dropped a datagram from %s:%d: %s", self.node_id, source[0], source[1], exc)
            return
        messages, errors = decode_packet(payload)
        if errors:
            self.stats.malformed += len(errors)
            log.warning("gossip node %s dropped %d bad messages from %s:%d: %s", self.node_id, len(errors),
                        source[0], source[1], errors[0])
        # Membership first: a new member's entries in the same datagram need it known.
        for message in sorted(messages, key=lambda m: isinstance(m, EntryUpdate)):
            try:
                self._handle(message, source)
            except Exception:
                log.exception("gossip node %s failed to handle %s from %s:%d", self.node_id, message.KIND,
                              source[0], source[1])

    def _handle(self, message: Message, source: tuple[str, int]) -> None:
        if isinstance(message, Ping):
            if message.target == self.node_id:
                reply = [encode(Ack(message.seq, self.node_id))]
                prober = self._membership.get(message.source)
                if prober is not None and prober.state == "dead":
                    # It was declared dead but is talking: tell it, so that it refutes now rather than at
                    # its next push-pull.
                    reply.append(encode(Dead(prober.node_id, prober.incarnation, self.node_id)))
                self._send(source, reply)
        elif isinstance(message, Ack):
            self._acked(message)
        elif isinstance(message, Nack):
            probe = self._probes.get(message.seq)
            if probe is not None:
                probe.nacks += 1
        elif isinstance(message, PingReq):
            self._relay(message, source)
        elif isinstance(message, (Alive, Suspect, Dead)):
            self._apply_member_message(message)
        elif isinstance(message, EntryUpdate):
            self._apply_entry(message, spread=True)
        else:
            self.stats.malformed += 1
            log.warning("gossip node %s got a %s message by UDP, which only travels by TCP", self.node_id,
                        message.KIND)

    def _acked(self, ack: Ack) -> None:
        probe = self._probes.get(ack.seq)
        if probe is not None and not probe.ack.done():
            probe.ack.set_result(None)
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            requester, seq, timer = relay
            timer.cancel()
            self._send(requester, [encode(Ack(seq, ack.source))])

    def _relay(self, request: PingReq, requester: tuple[str, int]) -> None:
        """Pings a member for another one that could not reach it; forwards the ack, or a nack in time."""
        seq = next(self._seq)
        self._send((request.address, request.port), [encode(Ping(seq, request.target, self.node_id))])

        def expire() -> None:
            if self._relays.pop(seq, None) is not None and request.nack:
                self._send(requester, [encode(Nack(request.seq, self.node_id))])

        self._relays[seq] = (requester, request.seq, self._loop.call_later(request.wait, expire))

    # Membership

    @staticmethod
    def _now() -> float:
        # The clock of asyncio's timers, usable before start too.
        return time.monotonic()

    def _apply_member_message(self, message: Alive | Suspect | Dead) -> None:
        now = self._now()
        if isinstance(message, Alive):
            outcome = self._membership.apply_alive(message, now)
        elif isinstance(message, Suspect):
            outcome = self._membership.apply_suspect(message, now)
            suspicion = self._suspicions.get(message.node)
            if outcome.confirmation_from and suspicion is not None and suspicion.confirm(message.source):
                # Pass a new confirmation on: it shortens the others' timers too.
                self._broadcast(("member", message.node), message)
        else:
            outcome = self._membership.apply_dead(message, now)
        self._follow(outcome, getattr(message, "source", message.node))

    def _follow(self, outcome: Outcome, source: str) -> None:
        """Acts on what a membership change means: gossip, timers, entries, consumers."""
        if outcome.refute is not None:
            # Being suspected is a hint that this node is the slow one (Lifeguard).
            self._awareness.apply(1)
            self._broadcast(("member", self.node_id), outcome.refute)
            log.info("gossip node %s refuted a suspicion of itself: incarnation now %d", self.node_id,
                     outcome.refute.incarnation)
        if outcome.rebroadcast is not None:
            self._broadcast(("member", outcome.rebroadcast.node), outcome.rebroadcast)
        member = outcome.changed
        if member is None:
            return
        node = member.node_id
        if member.state == "suspect":
            if node not in self._suspicions:
                self._suspect_timer(member, source)
        else:
            suspicion = self._suspicions.pop(node, None)
            if suspicion is not None:
                suspicion.cancel()
        log.info("gossip node %s: member %s (%s:%d) is %s (incarnation %d)", self.node_id, node, member.address,
                 member.port, member.state, member.incarnation)
        self._emit_member(member)
        if member.state in ("dead", "left"):
            dropped = self._store.drop_owner(node)
            if dropped:
                log.info("gossip node %s dropped %d entries of %s member %s", self.node_id, len(dropped),
                         member.state, node)
            for change in dropped:
                self._emit_entry(change)
        elif member.state == "alive" and outcome.previous in ("dead", "left"):
            # Its entries were dropped here when it died: fetch them back now rather than at the next
            # periodic push-pull.
            self._spawn(self._push_pull(member.address, member.port, join=False))

    def _suspect_timer(self, member: Member, source: str) -> None:
        live = self._membership.live_count()
        minimum = suspicion_timeout(self.config.suspicion_mult, live, self.config.probe_interval)
        expected = expected_confirmations(self.config.suspicion_mult, live)

        def expire() -> None:
            self._suspicions.pop(member.node_id, None)
            current = self._membership.get(member.node_id)
            if current is not None and current.state == "suspect" and current.incarnation == member.incarnation:
                log.info("gossip node %s declares member %s dead: suspect for %.2f s or more", self.node_id,
                         member.node_id, minimum)
                self._apply_member_message(Dead(member.node_id, member.incarnation, self.node_id))

        self._suspicions[member.node_id] = Suspicion(self._loop, source, expected, minimum,
                                                     minimum * self.config.suspicion_max_mult, expire)

    # Tables

    def _apply_entry(self, update: EntryUpdate, spread: bool) -> None:
        result = self._store.merge(update, self._now(), owner_live=self._membership.is_live(update.owner))
        if result.correction is not None:
            self._broadcast(("entry", update.table, update.key), result.correction)
        if result.accepted and spread:
            self._broadcast(("entry", update.table, update.key), update)
        for change in result.changes:
            self._emit_entry(change)

    # Probing

    async def _probe_loop(self) -> None:
        while True:
            started = self._now()
            target = self._next_probe_target()
            if target is not None:
                await self._probe(target)
            period = self._awareness.scale(self.config.probe_interval)
            await asyncio.sleep(max(0.0, started + period - self._now()))

    def _next_probe_target(self) -> Member | None:
        """Round robin over a shuffled list, reshuffled on every pass: each member is probed once a pass."""
        while self._probe_order:
            member = self._membership.get(self._probe_order.pop())
            if member is not None and member.node_id != self.node_id and member.state in ("alive", "suspect"):
                return member
        candidates = [m.node_id for m in self._membership.probe_candidates()]
        random.shuffle(candidates)
        self._probe_order = candidates
        return self._membership.get(self._probe_order.pop()) if self._probe_order else None

    async def _probe(self, target: Member) -> None:
        started = self._now()
        timeout = self._awareness.scale(self.config.probe_timeout)
        period = self._awareness.scale(self.config.probe_interval)
        seq = next(self._seq)
        probe = self._probes[seq] = _Probe(self._loop.create_future())
        try:
            self._send(target, [encode(Ping(seq, target.node_id, self.node_id))])
            if await self._wait(probe.ack, timeout):
                self._awareness.apply(-1)
                return
            helpers = [m for m in self._membership.probe_candidates()
                       if m.node_id != target.node_id and m.state == "alive"]
            helpers = random.sample(helpers, min(self.config.indirect_checks, len(helpers)))
            # Helpers must nack before this probe's period ends for the nack to count.
            wait = 0.8 * (period - timeout)
            request = encode(PingReq(seq, target.node_id, target.address, target.port, self.node_id, True, wait))
            for helper in helpers:
                self._send(helper, [request])
            if await self._wait(probe.ack, started + period - self._now()):
                return
            # Missing nacks mean our own messages are not getting through: this node is the unhealthy one.
            self._awareness.apply(len(helpers) - probe.nacks if helpers else 1)
            late = self._now() - (started + period)
            if late > self.config.probe_timeout:
                # This process was not running when the answers were due (a starved CPU, a long pause):
                # the silence says nothing about the target.
                self._awareness.apply(1)
                log.info("gossip node %s does not suspect member %s: its own probe ran %.2f s late",
                         self.node_id, target.node_id, late)
                return
            current = self._membership.get(target.node_id)
            if current is not None and current.state in ("alive", "suspect"):
                log.info("gossip node %s suspects member %s: no ack, direct or through %d others", self.node_id,
                         target.node_id, len(helpers))
                self._apply_member_message(Suspect(target.node_id, current.incarnation, self.node_id))
        finally:
            del self._probes[seq]

    @staticmethod
    async def _wait(future: asyncio.Future[None], timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, timeout))
            return True
        except TimeoutError:
            return False

    # Gossip and housekeeping

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.gossip_interval)
            if not len(self._queue):
                continue
            candidates = self._membership.gossip_candidates(self._now(), self.config.gossip_to_dead)
            for member in random.sample(candidates, min(self.config.gossip_nodes, len(candidates))):
                if not len(self._queue):
                    break
                self._send(member, [])

    async def _push_pull_loop(self) -> None:
        while True:
            period = push_pull_period(self.config.push_pull_interval, self._membership.live_count())
            # Jitter, so that nodes started together do not all sync at once.
            await asyncio.sleep(period * random.uniform(0.5, 1.0))
            candidates = [m for m in self._membership.probe_candidates() if m.state == "alive"]
            if candidates:
                member = random.choice(candidates)
                await self._push_pull(member.address, member.port, join=False)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(_REAP_PERIOD)
            now = self._now()
            for node in self._membership.reap(now, self.config.dead_reap):
                log.info("gossip node %s forgot member %s (gone for over %.0f s)", self.node_id, node,
                         self.config.dead_reap)
            self._store.reap(now)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

    # Push-pull

    def _state(self, join: bool) -> PushPull:
        return PushPull(self.node_id, join, self._store.clock.time, tuple(self._membership.snapshot()),
                        tuple(self._store.snapshot()))

    def _merge_state(self, state: PushPull) -> None:
        now = self._now()
        self._store.clock.witness(state.ltime)
        for record in state.members:
            self._follow(self._membership.apply_record(record, state.source, now), state.source)
        for update in state.entries:
            # Not gossiped on: the peer's other partners get its state by push-pull too.
            self._apply_entry(update, spread=False)

    async def _push_pull(self, host: str, port: int, join: bool) -> bool:
        writer = None
        try:
            async with asyncio.timeout(self.config.tcp_timeout):
                reader, writer = await asyncio.open_connection(host, port)
                await write_frame(writer, self._keyring.encrypt(encode(self._state(join))))
                state = decode(self._keyring.decrypt(await read_frame(reader)))
                if not isinstance(state, PushPull):
                    raise MalformedMessage(f"expected a push-pull answer, got a {state.KIND} message")
                self._merge_state(state)
                self.stats.push_pulls += 1
                return True
        except AuthenticationError as exc:
            self.stats.auth_failures += 1
            self.stats.push_pull_failures += 1
            log.warning("gossip node %s: push-pull answer from %s:%d refused: %s", self.node_id, host, port, exc)
        except MalformedMessage as exc:
            self.stats.malformed += 1
            self.stats.push_pull_failures += 1
            log.warning("gossip node %s: bad push-pull answer from %s:%d: %s", self.node_id, host, port, exc)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.stats.push_pull_failures += 1
            log.log(logging.WARNING if join else logging.DEBUG, "gossip node %s: push-pull with %s:%d failed: %s",
                    self.node_id, host, port, exc or type(exc).__name__)
        finally:
            if writer is not None:
                writer.close()
        return False

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        # Tracked so that stop() ends it: a stopped node must not merge state any more.
        task = asyncio.current_task()
        self._streams.add(task)
        try:
            async with asyncio.timeout(self.config.tcp_timeout):
                state = decode(self._keyring.decrypt(await read_frame(reader)))
                if not isinstance(state, PushPull):
                    raise MalformedMessage(f"expected a push-pull, got a {state.KIND} message")
                # Answer with our state as it was, then take theirs in.
                await write_frame(writer, self._keyring.encrypt(encode(self._state(join=False))))
                self._merge_state(state)
                self.stats.push_pulls += 1
                log.debug("gossip node %s: %s push-pull from %s", self.node_id, "join" if state.join else "periodic",
                          state.source)
        except AuthenticationError as exc:
            self.stats.auth_failures += 1
            log.warning("gossip node %s: push-pull from %s:%d refused: %s", self.node_id, peer[0], peer[1], exc)
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("gossip node %s: bad push-pull from %s:%d: %s", self.node_id, peer[0], peer[1], exc)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.debug("gossip node %s: push-pull from %s:%d failed: %s", self.node_id, peer[0], peer[1], exc)
        finally:
            self._streams.discard(task)
            writer.close()

    # Consumers

    def _emit_member(self, member: Member) -> None:
        for callback in self._member_callbacks:
            try:
                callback(member)
            except Exception:
                log.exception("gossip member callback failed for member %s", member.node_id)

    def _emit_entry(self, change: Change) -> None:
        for callback in self._entry_callbacks:
            try:
                callback(change.table, change.key, change.value)
            except Exception:
                log.exception("gossip entry callback failed for %s/%s", change.table, change.key)

    def _require_started(self) -> None:
        if self._loop is None:
            raise RuntimeError(f"gossip node {self.node_id} is not started")
