"""The timer of one suspected member: it fires (the member is declared dead) after a timeout that starts at
its maximum and shrinks as other members independently suspect the same member (Lifeguard)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from .timing import suspicion_deadline


class Suspicion:
    def __init__(self, loop: asyncio.AbstractEventLoop, source: str, expected: int, minimum: float,
                 maximum: float, on_timeout: Callable[[], None]) -> None:
        self._loop = loop
        self._expected = expected
        self._minimum = minimum
        self._maximum = maximum
        self._on_timeout = on_timeout
        # The first accuser does not confirm its own suspicion when it comes back to it by gossip.
        self._seen = {source}
        self._start = loop.time()
        self._handle = loop.call_later(suspicion_deadline(0, expected, minimum, maximum), on_timeout)

    @property
    def confirmations(self) -> int:
        return len(self._seen) - 1

    def confirm(self, source: str) -> bool:
        """Counts an independent suspicion; returns True when it was new (and worth gossiping on)."""
        if self.confirmations >= self._expected or source in self._seen:
            return False
        self._seen.add(source)
        deadline = suspicion_deadline(self.confirmations, self._expected, self._minimum, self._maximum)
        self._handle.cancel()
        remaining = self._start + deadline - self._loop.time()
        self._handle = self._loop.call_later(max(0.0, remaining), self._on_timeout)
        return True

    def cancel(self) -> None:
        self._handle.cancel()
