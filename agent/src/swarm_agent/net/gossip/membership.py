"""The member list and SWIM's rules for alive, suspect and dead messages. Pure state, no I/O or timers.

Incarnation numbers order what is said about a member: only the member itself raises its incarnation, which
it does to refute a suspicion or a death (its alive message then outranks them). For one incarnation,
dead outranks suspect, which outranks alive.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .messages import Alive, Dead, MemberRecord, MemberStateName, Suspect

LIVE_STATES = ("alive", "suspect")


@dataclass(frozen=True)
class Member:
    node_id: str
    address: str
    port: int
    state: MemberStateName
    incarnation: int


@dataclass(frozen=True)
class Outcome:
    """What applying one message changed, for the caller to act on."""
    # The member's new view when its state, address or port changed (consumers are told).
    changed: Member | None = None
    # Its state before this message; None for a member first heard of.
    previous: MemberStateName | None = None
    # The message is news here and should be gossiped on.
    rebroadcast: Alive | Suspect | Dead | None = None
    # The message was about this node and wrong: gossip this alive message (a higher incarnation) instead.
    refute: Alive | None = None
    # A suspicion of a member already suspect, from this node (a Lifeguard confirmation).
    confirmation_from: str | None = None


@dataclass
class _Record:
    member: Member
    since: float     # when the member entered its current state


class Membership:
    def __init__(self, node_id: str, address: str, port: int, incarnation: int = 0) -> None:
        self.node_id = node_id
        self._records: dict[str, _Record] = {node_id: _Record(Member(node_id, address, port, "alive", incarnation),
                                                              0.0)}

    @property
    def local(self) -> Member:
        return self._records[self.node_id].member

    def get(self, node_id: str) -> Member | None:
        record = self._records.get(node_id)
        return record.member if record is not None else None

    def members(self) -> list[Member]:
        return sorted((r.member for r in self._records.values()), key=lambda m: m.node_id)

    def is_live(self, node_id: str) -> bool:
        record = self._records.get(node_id)
        return record is not None and record.member.state in LIVE_STATES

    def live_count(self) -> int:
        """The cluster size that timeouts and retransmit counts scale with (this node included)."""
        return sum(1 for r in self._records.values() if r.member.state in LIVE_STATES)

    def probe_candidates(self) -> list[Member]:
        return [r.member for r in self._records.values()
                if r.member.node_id != self.node_id and r.member.state in LIVE_STATES]

    def gossip_candidates(self, now: float, gossip_to_dead: float) -> list[Member]:
        """Live members, and those declared dead recently: a member declared dead by mistake must hear of
        it to refute."""
        return [r.member for r in self._records.values()
                if r.member.node_id != self.node_id
                and (r.member.state in LIVE_STATES or (r.member.state == "dead" and now - r.since <= gossip_to_dead))]

    def snapshot(self) -> list[MemberRecord]:
        return [MemberRecord(m.node_id, m.address, m.port, m.state, m.incarnation) for m in self.members()]

    def _set(self, member: Member, now: float) -> Outcome:
        record = self._records.get(member.node_id)
        previous = record.member if record is not None else None
        since = now if previous is None or previous.state != member.state else record.since
        self._records[member.node_id] = _Record(member, since)
        visible = previous is None or (previous.state, previous.address, previous.port) != (
            member.state, member.address, member.port)
        return Outcome(changed=member if visible else None, previous=previous.state if previous else None)

    # Local decisions

    def refute(self, seen_incarnation: int) -> Alive:
        """Raises this node's incarnation above what others said about it; returns the alive message."""
        local = self.local
        incarnation = max(local.incarnation, seen_incarnation) + 1
        self._records[self.node_id].member = replace(local, incarnation=incarnation, state="alive")
        return Alive(self.node_id, local.address, local.port, incarnation)

    def alive_message(self) -> Alive:
        local = self.local
        return Alive(local.node_id, local.address, local.port, local.incarnation)

    def leave(self, now: float) -> Dead:
        local = self.local
        self._set(replace(local, state="left"), now)
        return Dead(self.node_id, local.incarnation, self.node_id)

    # Messages

    def apply_alive(self, message: Alive, now: float) -> Outcome:
        record = self._records.get(message.node)
        if message.node == self.node_id:
            local = record.member
            newer = message.incarnation > local.incarnation
            moved = message.incarnation == local.incarnation and (message.address, message.port) != (
                local.address, local.port)
            if local.state == "alive" and (newer or moved):
                return Outcome(refute=self.refute(message.incarnation))
            return Outcome()
        if record is not None and message.incarnation <= record.member.incarnation:
            return Outcome()
        outcome = self._set(Member(message.node, message.address, message.port, "alive", message.incarnation), now)
        return replace(outcome, rebroadcast=message)

    def _unaccusable(self, message: Suspect | Dead) -> Outcome | None:
        """The answer to a suspicion or death that changes nothing here (an unknown or stale member, one already
        dead or gone) or that names this node (which refutes); None when the accusation applies."""
        record = self._records.get(message.node)
        if record is None or message.incarnation < record.member.incarnation:
            return Outcome()
        if record.member.state in ("dead", "left"):
            return Outcome()
        if message.node == self.node_id:
            return Outcome(refute=self.refute(message.incarnation))
        return None

    def apply_suspect(self, message: Suspect, now: float) -> Outcome:
        unaccusable = self._unaccusable(message)
        if unaccusable is not None:
            return unaccusable
        member = self._records[message.node].member
        if member.state == "suspect":
            return Outcome(confirmation_from=message.source)
        outcome = self._set(replace(member, state="suspect", incarnation=message.incarnation), now)
        return replace(outcome, rebroadcast=message)

    def apply_dead(self, message: Dead, now: float) -> Outcome:
        unaccusable = self._unaccusable(message)
        if unaccusable is not None:
            return unaccusable
        member = self._records[message.node].member
        state: MemberStateName = "left" if message.source == message.node else "dead"
        outcome = self._set(replace(member, state=state, incarnation=message.incarnation), now)
        return replace(outcome, rebroadcast=message)

    def apply_record(self, record: MemberRecord, source: str, now: float) -> Outcome:
        """Merges one member of a peer's push-pull. A peer's "dead" only makes the member suspect here: it
        gets a chance to refute before this node also declares it dead."""
        if record.state == "alive":
            return self.apply_alive(Alive(record.node, record.address, record.port, record.incarnation), now)
        if record.node not in self._records and record.node != self.node_id:
            # A member first heard of as suspect is probably alive: learn of it as suspect (it will refute
            # or be declared dead here too). One already dead or gone is not worth learning of.
            if record.state != "suspect":
                return Outcome()
            return self._set(Member(record.node, record.address, record.port, "suspect", record.incarnation), now)
        if record.state in ("suspect", "dead"):
            return self.apply_suspect(Suspect(record.node, record.incarnation, source), now)
        return self.apply_dead(Dead(record.node, record.incarnation, record.node), now)

    def reap(self, now: float, after: float) -> list[str]:
        """Forgets members dead or gone for longer than `after` seconds."""
        gone = [node for node, r in self._records.items()
                if node != self.node_id and r.member.state in ("dead", "left") and now - r.since > after]
        for node in gone:
            del self._records[node]
        return gone
