"""The heartbeat period stretches with the cluster, as DESIGN.md asks, so that managers keep up."""

from types import SimpleNamespace

from swarm_agent.api.models import Node, Swarm
from swarm_agent.manager.manager import HEARTBEATS_PER_MANAGER, Manager, stretched_period
from swarm_agent.store.state import Snapshot


def test_the_cluster_setting_holds_until_the_managers_would_be_busy():
    assert stretched_period(5.0, 300, 1) == 5.0
    assert stretched_period(5.0, 0, 0) == 5.0


def test_past_that_each_manager_answers_a_steady_rate():
    assert stretched_period(5.0, 2500, 1) == 2500 / HEARTBEATS_PER_MANAGER
    assert stretched_period(5.0, 2500, 3) == 2500 / (3 * HEARTBEATS_PER_MANAGER)
    assert 2500 / stretched_period(5.0, 2500, 3) / 3 <= HEARTBEATS_PER_MANAGER


async def test_it_follows_the_nodes_in_the_swarm_not_the_sessions_still_open():
    """Sessions ending under load must not shorten the period of those left (see stretched_period)."""
    state = Snapshot(cluster=Swarm(ID="c"), managers={"m1": {}, "m2": {}, "m3": {}})
    state.nodes = {f"n{i}": Node(ID=f"n{i}") for i in range(2400)}
    state.sessions = {"n0": {"session": 1}}
    mgr = SimpleNamespace(cache=SimpleNamespace(state=state))
    assert await Manager.heartbeat_period(mgr) == stretched_period(5.0, 2400, 3) == 8.0  # type: ignore[arg-type]
