"""Lifeguard's arithmetic: suspicion timeouts, their shrinking with confirmations, local health, retransmits."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_agent.net.gossip.suspicion import Suspicion
from swarm_agent.net.gossip.timing import (
    Awareness,
    expected_confirmations,
    push_pull_period,
    retransmit_limit,
    suspicion_deadline,
    suspicion_timeout,
)


def test_suspicion_timeout_scales_with_log10_of_the_cluster() -> None:
    assert suspicion_timeout(3, 1, 0.5) == 1.5
    assert suspicion_timeout(3, 4, 0.5) == 1.5          # log10(4) < 1: never below one unit
    assert suspicion_timeout(3, 100, 0.5) == pytest.approx(3.0)
    assert suspicion_timeout(4, 1000, 1.0) == pytest.approx(12.0)


def test_expected_confirmations_needs_enough_members() -> None:
    assert expected_confirmations(3, 4) == 1
    assert expected_confirmations(5, 4) == 0       # only 2 others could confirm 3
    assert expected_confirmations(5, 5) == 3
    assert expected_confirmations(2, 10) == 0


@given(minimum=st.floats(0.01, 100), factor=st.floats(1, 10), expected=st.integers(1, 10))
def test_deadline_shrinks_from_max_to_min(minimum: float, factor: float, expected: int) -> None:
    maximum = minimum * factor
    deadlines = [suspicion_deadline(n, expected, minimum, maximum) for n in range(expected + 3)]
    assert deadlines[0] == pytest.approx(maximum)
    assert deadlines[expected] == pytest.approx(minimum)
    assert all(later <= earlier for earlier, later in zip(deadlines, deadlines[1:]))
    assert all(minimum <= d <= maximum + 1e-9 for d in deadlines)


def test_deadline_is_logarithmic() -> None:
    # One confirmation of three expected takes log(2)/log(4) = half of the way down.
    assert suspicion_deadline(1, 3, 1.0, 3.0) == pytest.approx(2.0)
    assert suspicion_deadline(0, 0, 1.0, 3.0) == 1.0


def test_retransmit_limit() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 100) == 12


def test_push_pull_period_grows_beyond_32_members() -> None:
    assert push_pull_period(15.0, 32) == 15.0
    assert push_pull_period(15.0, 33) == 30.0
    assert push_pull_period(15.0, 64) == 30.0
    assert push_pull_period(15.0, 65) == 45.0


def test_awareness_is_clamped_and_scales() -> None:
    awareness = Awareness(max_mult=8)
    awareness.apply(-1)
    assert awareness.score == 0 and awareness.scale(0.5) == 0.5
    awareness.apply(3)
    assert awareness.scale(0.5) == 2.0
    awareness.apply(100)
    assert awareness.score == 7 and awareness.scale(1.0) == 8.0
    awareness.apply(-2)
    assert awareness.score == 5


class _Clock:
    """Stands in for the event loop's timer API, to follow the timer's rescheduling without waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.scheduled: list[tuple[float, bool]] = []   # (fires at, cancelled)

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback):
        clock = self
        self.scheduled.append((self.now + delay, False))
        index = len(self.scheduled) - 1

        class Handle:
            def cancel(self) -> None:
                clock.scheduled[index] = (clock.scheduled[index][0], True)
        return Handle()

    def pending(self) -> list[float]:
        return [at for at, cancelled in self.scheduled if not cancelled]


def test_suspicion_timer_reschedules_on_new_confirmations_only() -> None:
    clock = _Clock()
    suspicion = Suspicion(clock, "a", expected=3, minimum=1.0, maximum=3.0, on_timeout=lambda: None)
    assert clock.pending() == [103.0]
    clock.now = 100.5
    assert not suspicion.confirm("a")        # the accuser's own suspicion coming back
    assert suspicion.confirm("b")
    assert clock.pending() == [pytest.approx(102.0)]   # still counted from the start
    assert not suspicion.confirm("b")
    assert suspicion.confirm("c") and suspicion.confirm("d")
    assert clock.pending() == [pytest.approx(101.0)]
    assert not suspicion.confirm("e")        # enough confirmations: no more news
    assert suspicion.confirmations == 3
    clock.now = 102.0                         # past the deadline already: fire at once
    suspicion2 = Suspicion(clock, "a", expected=1, minimum=1.0, maximum=3.0, on_timeout=lambda: None)
    clock.now = 104.0
    suspicion2.confirm("b")
    assert clock.pending()[-1] == clock.now
    suspicion.cancel()
    suspicion2.cancel()
    assert clock.pending() == []
