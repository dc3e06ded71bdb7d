"""Replicated tables: entries owned by the node that wrote them, ordered by Lamport time.

Pure state, no I/O: the gossip loop feeds it local writes and remote updates and spreads what it returns.

Rules (libnetwork's NetworkDB, made explicit):
- every write is stamped with the writer's Lamport clock, which witnesses every time it receives, so a write
  made after seeing another is ordered after it;
- a receiver keeps, per (table, key), the update with the highest (ltime, owner, tombstone): deletes are
  tombstones that win over older puts and are reaped after a while;
- only the owner changes or deletes its entries; a member declared dead or gone loses all its entries (and
  tombstones) at once, and sends them again when it comes back;
- the owner is the authority on its own entries: an update about one of ours that we do not hold (from our
  previous life, before a restart) is overridden with a fresher write of what we hold now.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from .messages import EntryUpdate


class LamportClock:
    def __init__(self) -> None:
        self._time = 0

    @property
    def time(self) -> int:
        return self._time

    def increment(self) -> int:
        self._time += 1
        return self._time

    def witness(self, seen: int) -> None:
        self._time = max(self._time, seen)


@dataclass(frozen=True)
class Entry:
    """A live entry of a table as `entries()` returns it."""
    owner: str
    value: dict[str, Any]
    ltime: int


@dataclass(frozen=True)
class Change:
    """What a consumer sees: the entry's new value, None when it is gone."""
    table: str
    key: str
    value: dict[str, Any] | None


@dataclass
class _Stored:
    owner: str
    ltime: int
    value: dict[str, Any] | None
    reap_at: float | None = None     # tombstones only

    def order(self) -> tuple[int, str, bool]:
        return (self.ltime, self.owner, self.value is None)


def _order(update: EntryUpdate) -> tuple[int, str, bool]:
    return (update.ltime, update.owner, update.value is None)


@dataclass(frozen=True)
class MergeResult:
    changes: tuple[Change, ...] = ()
    # The update was new here, so it is worth passing on.
    accepted: bool = False
    # An update of ours this node writes to override a stale copy of one of its own entries.
    correction: EntryUpdate | None = None


def _check_name(what: str, name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 256:
        raise ValueError(f"{what} {name!r}: expected a non-empty string of at most 256 characters")


class TableStore:
    def __init__(self, node_id: str, tombstone_ttl: float) -> None:
        self.node_id = node_id
        self.clock = LamportClock()
        self._ttl = tombstone_ttl
        self._tables: dict[str, dict[str, _Stored]] = {}

    # Local writes

    def put(self, table: str, key: str, value: dict[str, Any]) -> tuple[EntryUpdate, Change]:
        _check_name("table", table)
        _check_name("key", key)
        if not isinstance(value, dict):
            raise ValueError(f"value of {table}/{key}: expected a dict, got {type(value).__name__}")
        try:
            # A private copy, so the caller changing its dict later does not change what was sent.
            value = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"value of {table}/{key} cannot be sent as JSON: {exc}") from None
        self._check_owned(table, key)
        return self._write(table, key, value, reap_at=None)

    def delete(self, table: str, key: str, now: float) -> tuple[EntryUpdate, Change] | None:
        _check_name("table", table)
        _check_name("key", key)
        stored = self._tables.get(table, {}).get(key)
        if stored is None or stored.value is None:
            return None
        self._check_owned(table, key)
        return self._write(table, key, None, reap_at=now + self._ttl)

    def _check_owned(self, table: str, key: str) -> None:
        stored = self._tables.get(table, {}).get(key)
        if stored is not None and stored.value is not None and stored.owner != self.node_id:
            raise ValueError(f"entry {table}/{key} is owned by node {stored.owner}; only its owner changes it")

    def _write(self, table: str, key: str, value: dict[str, Any] | None,
               reap_at: float | None) -> tuple[EntryUpdate, Change]:
        ltime = self.clock.increment()
        self._tables.setdefault(table, {})[key] = _Stored(self.node_id, ltime, value, reap_at)
        return EntryUpdate(table, key, self.node_id, ltime, value), Change(table, key, copy.deepcopy(value))

    # Remote updates

    def merge(self, update: EntryUpdate, now: float, owner_live: bool) -> MergeResult:
        """Applies an update received from the network. `owner_live`: whether its owner is a member this
        node believes alive or suspect (updates of dead or unknown owners are stale and ignored)."""
        self.clock.witness(update.ltime)
        stored = self._tables.get(update.table, {}).get(update.key)
        if update.owner == self.node_id:
            return self._check_own(update, stored, now)
        if stored is not None and stored.order() >= _order(update):
            return MergeResult()
        if not owner_live:
            return MergeResult()
        old_value = stored.value if stored is not None else None
        reap_at = now + self._ttl if update.value is None else None
        self._tables.setdefault(update.table, {})[update.key] = _Stored(update.owner, update.ltime, update.value,
                                                                         reap_at)
        changes = () if old_value == update.value else (Change(update.table, update.key,
                                                               copy.deepcopy(update.value)),)
        return MergeResult(changes=changes, accepted=True)

    def _check_own(self, update: EntryUpdate, stored: _Stored | None, now: float) -> MergeResult:
        """An update of one of our own entries coming back. Unless it is what we hold (or older), it is from
        before a restart: our clock then started again, so even the same Lamport time may hide another value."""
        mine = stored is not None and stored.owner == self.node_id
        if mine and (stored.ltime > update.ltime or (stored.ltime == update.ltime and stored.value == update.value)):
            return MergeResult()
        if not mine and stored is not None and stored.order() > _order(update):
            return MergeResult()
        current = stored.value if mine else None
        correction, _ = self._write(update.table, update.key, current, None if current is not None else now + self._ttl)
        return MergeResult(correction=correction)

    # Membership consequences and housekeeping

    def drop_owner(self, owner: str) -> list[Change]:
        """Forgets everything `owner` wrote (it is dead or gone); returns the entries that disappear."""
        gone = []
        for table, entries in self._tables.items():
            for key in [k for k, s in entries.items() if s.owner == owner]:
                if entries.pop(key).value is not None:
                    gone.append(Change(table, key, None))
        return gone

    def reap(self, now: float) -> int:
        reaped = 0
        for table in list(self._tables):
            entries = self._tables[table]
            for key in [k for k, s in entries.items() if s.reap_at is not None and s.reap_at <= now]:
                del entries[key]
                reaped += 1
            if not entries:
                del self._tables[table]
        return reaped

    # Reading

    def entries(self, table: str) -> dict[str, Entry]:
        return {key: Entry(s.owner, copy.deepcopy(s.value), s.ltime)
                for key, s in self._tables.get(table, {}).items() if s.value is not None}

    def snapshot(self) -> list[EntryUpdate]:
        """Every entry and tombstone, for a push-pull."""
        return [EntryUpdate(table, key, s.owner, s.ltime, s.value)
                for table, entries in self._tables.items() for key, s in entries.items()]
