"""The arithmetic of SWIM with Lifeguard's refinements: timeouts, retransmit counts and local health.

These are the formulas of hashicorp/memberlist, so that the behaviour (and its tuning) is familiar.
"""
from __future__ import annotations

import math

# Beyond this many members the push-pull period grows with log2 of the cluster size.
_PUSH_PULL_SCALE_THRESHOLD = 32


def suspicion_timeout(suspicion_mult: int, members: int, probe_interval: float) -> float:
    """Minimum time a member stays suspect before it is declared dead: longer in larger clusters, where the
    news of a refutation takes longer to spread."""
    node_scale = max(1.0, math.log10(max(1, members)))
    return suspicion_mult * node_scale * probe_interval


def expected_confirmations(suspicion_mult: int, members: int) -> int:
    """How many independent suspicions drive the timeout down to its minimum. With too few members to ever
    send them (the suspect and ourselves excluded), expect none and use the minimum at once."""
    k = suspicion_mult - 2
    return k if members - 2 >= k else 0


def suspicion_deadline(confirmations: int, expected: int, minimum: float, maximum: float) -> float:
    """Total suspicion time (from its start) after `confirmations` independent confirmations: Lifeguard's
    logarithmic decay from `maximum` (none) to `minimum` (`expected` or more)."""
    if expected < 1:
        return minimum
    fraction = math.log(confirmations + 1) / math.log(expected + 1)
    return max(minimum, maximum - fraction * (maximum - minimum))


def retransmit_limit(retransmit_mult: int, members: int) -> int:
    """How many times one update is piggybacked before it is dropped from the queue."""
    return retransmit_mult * math.ceil(math.log10(members + 1))


def push_pull_period(interval: float, members: int) -> float:
    if members <= _PUSH_PULL_SCALE_THRESHOLD:
        return interval
    return interval * (math.ceil(math.log2(members) - math.log2(_PUSH_PULL_SCALE_THRESHOLD)) + 1)


class Awareness:
    """Lifeguard's local health multiplier: a score that rises when this node misses acks it should have had
    (so the fault is probably ours: a starved process, a loaded CPU) and falls with every successful probe.
    Our own probe timeouts are stretched by (score + 1), so a slow node stops accusing healthy ones."""

    def __init__(self, max_mult: int) -> None:
        self._max = max_mult
        self._score = 0

    @property
    def score(self) -> int:
        return self._score

    def apply(self, delta: int) -> None:
        self._score = min(self._max - 1, max(0, self._score + delta))

    def scale(self, timeout: float) -> float:
        return timeout * (self._score + 1)
