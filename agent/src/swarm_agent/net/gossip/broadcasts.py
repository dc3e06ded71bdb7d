"""Updates waiting to be piggybacked on outgoing datagrams, each sent a limited number of times."""
from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass
class _Queued:
    encoded: bytes
    transmits: int
    order: int


class BroadcastQueue:
    """Updates keyed by what they are about (a member, a table entry): a newer update about the same thing
    replaces the queued one, which is obsolete. The least-sent updates go first, newest first among equals."""

    def __init__(self) -> None:
        self._queued: dict[Hashable, _Queued] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._queued)

    def push(self, about: Hashable, encoded: bytes) -> None:
        self._queued[about] = _Queued(encoded, 0, next(self._counter))

    def take(self, budget: int, limit: int) -> list[bytes]:
        """Up to `budget` bytes of updates (one separator byte counted per update), each counted as sent
        once more; an update sent `limit` times leaves the queue."""
        chosen: list[bytes] = []
        for about, item in sorted(self._queued.items(), key=lambda kv: (kv[1].transmits, -kv[1].order)):
            cost = len(item.encoded) + 1
            if cost > budget:
                continue
            budget -= cost
            chosen.append(item.encoded)
            item.transmits += 1
            if item.transmits >= limit:
                del self._queued[about]
            if budget <= 1:
                break
        return chosen
