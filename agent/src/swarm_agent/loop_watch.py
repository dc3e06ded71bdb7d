"""How long an event loop keeps a question from another thread waiting: a busy loop answers late, a stuck one
never. A thread asks every so often (``ask``) and reads how long ago the loop last answered (``silent_for``)."""

import asyncio
import time


class LoopWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._answered = time.monotonic()

    def ask(self) -> bool:
        """Ask the loop to answer when it next gets to it; False once the loop is closed."""
        try:
            self._loop.call_soon_threadsafe(self._answer)
        except RuntimeError:
            return False
        return True

    def silent_for(self) -> float:
        return time.monotonic() - self._answered

    def _answer(self) -> None:
        self._answered = time.monotonic()
