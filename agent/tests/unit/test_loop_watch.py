"""LoopWatch: a question from another thread is answered when the event loop gets to it, and not while it is busy."""

import asyncio
import threading
import time

from swarm_agent.loop_watch import LoopWatch


async def test_a_busy_loop_answers_late_and_a_closed_one_never() -> None:
    watch = LoopWatch(asyncio.get_running_loop())
    asked = threading.Thread(target=watch.ask)
    asked.start()
    asked.join()
    time.sleep(0.5)  # busy: the question waits
    assert watch.silent_for() >= 0.5
    await asyncio.sleep(0.05)  # the loop gets to it
    assert watch.silent_for() < 0.5


def test_a_closed_loop_is_not_asked() -> None:
    loop = asyncio.new_event_loop()
    watch = LoopWatch(loop)
    loop.close()
    assert not watch.ask()
