"""Which manager a node's session tries first (workers spread over the managers, a manager's node keeps its own),
and how long it waits between attempts."""

import random

from swarm_agent.worker.session import RECONNECT_BASE, RECONNECT_MAX, connection_order, reconnect_delay

MANAGERS = ["10.0.0.1:2377", "10.0.0.2:2377", "10.0.0.3:2377"]


def test_workers_start_at_any_manager_and_try_every_one() -> None:
    rng = random.Random(7)
    orders = [connection_order(MANAGERS, stay_with_first=False, rng=rng) for _ in range(300)]
    assert all(sorted(order) == sorted(MANAGERS) for order in orders)
    firsts = [order[0] for order in orders]
    # Each manager comes first about a third of the time.
    assert all(60 <= firsts.count(m) <= 140 for m in MANAGERS), {m: firsts.count(m) for m in MANAGERS}
    # A failover goes on round the ring from where it started.
    assert all(order[1] == MANAGERS[(MANAGERS.index(order[0]) + 1) % 3] for order in orders)


def test_a_managers_own_node_always_starts_with_its_own_manager() -> None:
    assert all(connection_order(MANAGERS, stay_with_first=True) == MANAGERS for _ in range(50))
    assert connection_order(MANAGERS[:1], stay_with_first=False) == MANAGERS[:1]


def test_reconnect_waits_grow_to_a_cap_and_are_spread() -> None:
    rng = random.Random(3)
    bounds = [max(reconnect_delay(failures, rng) for _ in range(200)) for failures in range(12)]
    assert bounds[0] <= RECONNECT_BASE
    assert all(later >= earlier for earlier, later in zip(bounds[:6], bounds[1:7]))
    assert all(bound <= RECONNECT_MAX for bound in bounds) and bounds[-1] > RECONNECT_MAX * 0.9
    # Nodes cut off together come back spread over half the bound, not all at once.
    waits = [reconnect_delay(10, rng) for _ in range(500)]
    assert min(waits) >= RECONNECT_MAX / 2 and max(waits) - min(waits) > RECONNECT_MAX / 3
    assert reconnect_delay(10**6, rng) <= RECONNECT_MAX
