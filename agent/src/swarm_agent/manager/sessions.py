"""The worker sessions a manager holds, all under one etcd lease of its own.

A node is alive while its session key ``/swarm/sessions/<node id>`` exists (the leader reads the cache). The
manager that opened the session attaches the key to its session lease, which it renews once a second (from a
thread of its own, see lease_keeper.py), and notes each heartbeat in memory; when a node falls silent for three
heartbeat periods, its manager deletes the key (after six when most of its nodes fall silent together, see
MASS_SILENCE_SHARE). So a heartbeat costs no store call: renewing one etcd lease per
heartbeat was an eighth of a busy manager's work and most of its etcd's at rest (SwarmKit's dispatcher, too,
keeps heartbeats in memory).

If the manager dies, its sessions go when its lease expires (three periods, at least 15 s): its nodes,
finding it gone at their next heartbeat, have opened sessions with another manager by then. A manager that
restarts takes over the sessions its nodes still heartbeat to, and a graceful stop leaves its lease to expire
rather than revoke it, so that its nodes do not show down while they move.
"""

import asyncio
import json
import logging
import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..api.models import now
from ..store.etcd import EtcdError, cmp_mod, op_delete, op_put
from ..store.state import SESSIONS

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger(__name__)

# A session ends after this many heartbeat periods without a heartbeat.
PERIODS_TO_EXPIRY = 3
# The manager's lease lasts as long, and at least this many seconds: renewed every second, it must outlive a
# slow etcd, or every session of the manager ends at once. The TTL is set when the lease is granted; if the
# period stretches past a third of it afterwards (thousands of nodes joining), a dead manager's nodes can show
# down for a moment before they move. Moving every session to a longer lease instead held up the renewals of
# both leases while it ran, and lost them, at 2,500 nodes.
MIN_LEASE_TTL = 15
# A manager that has not heard from more than this share of the nodes it holds sessions for (at least
# MASS_SILENCE_MIN of them) for LATE_PERIODS takes the silence for its own: it was too busy to hear them, or its
# network failed, far likelier than most of its nodes dying in the same few seconds. While it is so deaf, a
# session ends after twice PERIODS_TO_EXPIRY periods of silence, as Kubernetes' node lifecycle controller stops
# evicting when most nodes of a zone go unready at once: ending them would show them down and move their tasks,
# the churn that keeps a busy manager busy. Gossip still ends the session of a node it finds dead meanwhile.
# Silence is judged across the period rather than by the sessions due to end in one sweep: the nodes heartbeat
# at phases spread over the period, so even a deaf manager finds only a period's fraction of them due at a time.
MASS_SILENCE_SHARE = 0.5
MASS_SILENCE_MIN = 10
LATE_PERIODS = 1.5


class SessionExpired(Exception):
    """The heartbeat's session is not (or no longer) the node's: it must open a new one."""


@dataclass
class Held:
    session: int  # the session's ID, which the node sends with each heartbeat
    revision: int  # the key's revision as this manager last wrote it: a key rewritten elsewhere is not deleted
    expires: float  # event loop time
    period: float  # the heartbeat period the session was last given


class Sessions:
    def __init__(self, mgr: "Manager") -> None:
        self.mgr = mgr
        self.lease = 0
        self.lease_ttl = 0
        self.held: dict[str, Held] = {}
        # Since when (event loop time) this manager has not heard from most of its nodes (MASS_SILENCE_SHARE).
        self.deaf_since: float | None = None
        self._granting = asyncio.Lock()

    async def open(self, node_id: str, addr: str, period: float) -> int:
        """Start a new session for ``node_id`` (replacing any it had); returns the session's ID."""
        session = secrets.randbits(62) + 1
        await self._hold(node_id, {"manager": self.mgr.node_id, "since": now(), "addr": addr, "session": session},
                         guard=None, period=period)
        return session

    async def heartbeat(self, node_id: str, session: int, period: float) -> None:
        """Note that the node is alive; its session must be its current one. Raises SessionExpired."""
        held = self.held.get(node_id)
        if held is not None and held.session == session and self.lease:
            held.expires = asyncio.get_running_loop().time() + PERIODS_TO_EXPIRY * period
            held.period = period
            return
        # Not held here: a session opened by this manager before it restarted, or before it lost its lease.
        kv = await self.mgr.store.etcd.get(SESSIONS + node_id)
        record = _decode(kv.value) if kv else None
        if record is None or record.get("session") != session:
            raise SessionExpired(f"session expired: {session:x} is not the session of node {node_id}; "
                                 "open a new one")
        await self._hold(node_id, record, guard=kv.mod_revision, period=period)
        log.info("manager %s took over the session of node %s", self.mgr.node_id, node_id)

    async def end(self, node_id: str) -> None:
        """End the node's session now (it left, or gossip found it dead), whichever manager holds it."""
        self.held.pop(node_id, None)
        await self.mgr.store.etcd.txn([], [op_delete(SESSIONS + node_id)])

    async def run(self) -> None:
        """Notice a lost lease, and end the sessions whose nodes fell silent."""
        while True:
            await asyncio.sleep(1)
            try:
                self._check_lease()
                self._forget_ended_elsewhere()
                await self._expire()
            except EtcdError as exc:
                log.warning("manager %s could not keep its sessions: %s", self.mgr.node_id, exc)

    async def _hold(self, node_id: str, record: dict[str, Any], guard: int | None, period: float) -> None:
        lease = await self._lease(period)
        key = SESSIONS + node_id
        compare = [cmp_mod(key, guard)] if guard is not None else []
        ok, revision, _ = await self.mgr.store.etcd.txn(
            compare, [op_put(key, json.dumps({**record, "manager": self.mgr.node_id}), lease=lease)])
        if not ok:
            raise SessionExpired(f"session expired: node {node_id}'s session changed meanwhile; open a new one")
        self.held[node_id] = Held(int(record["session"]), revision,
                                  asyncio.get_running_loop().time() + PERIODS_TO_EXPIRY * period, period)

    async def _lease(self, period: float) -> int:
        async with self._granting:
            if not self.lease:
                self.lease_ttl = max(MIN_LEASE_TTL, math.ceil(PERIODS_TO_EXPIRY * period))
                self.lease = await self.mgr.leases.lease_grant(self.lease_ttl)
                self.mgr.keeper.hold(self.lease, self.lease_ttl)
                log.info("manager %s holds its sessions under lease %x (TTL %d s)",
                         self.mgr.node_id, self.lease, self.lease_ttl)
            return self.lease

    def _check_lease(self) -> None:
        if self.lease and self.mgr.keeper.lost(self.lease):
            log.warning("manager %s lost its session lease %x: %d sessions ended",
                        self.mgr.node_id, self.lease, len(self.held))
            self.mgr.keeper.drop(self.lease)
            self.lease = 0
            self.held.clear()

    def _forget_ended_elsewhere(self) -> None:
        """Drop sessions whose key the cache, past this manager's write, shows deleted or replaced (the node left
        through another manager, or gossip found it dead): their next heartbeat is refused, and the node opens
        a new session."""
        cache = self.mgr.cache
        for node_id, held in list(self.held.items()):
            record = cache.state.sessions.get(node_id)
            if cache.revision >= held.revision and (record is None or record.get("session") != held.session):
                del self.held[node_id]

    async def _expire(self) -> None:
        time = asyncio.get_running_loop().time()
        deaf = self._deaf(time)
        for node_id, held in list(self.held.items()):
            if held.expires + (PERIODS_TO_EXPIRY * held.period if deaf else 0) > time:
                continue
            del self.held[node_id]
            key = SESSIONS + node_id
            deleted, _, _ = await self.mgr.store.etcd.txn([cmp_mod(key, held.revision)], [op_delete(key)])
            if deleted:
                log.warning("node %s missed its heartbeats: manager %s ended its session", node_id, self.mgr.node_id)

    def _deaf(self, time: float) -> bool:
        """Whether this manager has gone deaf to most of its nodes (see MASS_SILENCE_SHARE)."""
        late = sum(1 for held in self.held.values()
                   if held.expires - time < (PERIODS_TO_EXPIRY - LATE_PERIODS) * held.period)
        deaf = late >= MASS_SILENCE_MIN and late > MASS_SILENCE_SHARE * len(self.held)
        if deaf and self.deaf_since is None:
            self.deaf_since = time
            log.warning("manager %s has not heard from %d of the %d nodes it holds sessions for: it takes the silence "
                        "for its own, and gives their sessions twice as long", self.mgr.node_id, late, len(self.held))
        elif not deaf and self.deaf_since is not None:
            log.warning("manager %s hears from its nodes again after %.0f s (%d of %d late)", self.mgr.node_id,
                        time - self.deaf_since, late, len(self.held))
            self.deaf_since = None
        return deaf

def _decode(value: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(value)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
