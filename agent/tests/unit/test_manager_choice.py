"""Which manager a node's session tries first: workers spread over the managers, a manager's node keeps its own."""

import random

from swarm_agent.worker.session import connection_order

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
