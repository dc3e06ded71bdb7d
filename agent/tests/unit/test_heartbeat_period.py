"""The heartbeat period stretches with the cluster, as DESIGN.md asks, so that managers keep up."""

from swarm_agent.manager.manager import HEARTBEATS_PER_MANAGER, stretched_period


def test_the_cluster_setting_holds_until_the_managers_would_be_busy():
    assert stretched_period(5.0, 300, 1) == 5.0
    assert stretched_period(5.0, 0, 0) == 5.0


def test_past_that_each_manager_answers_a_steady_rate():
    assert stretched_period(5.0, 2500, 1) == 2500 / HEARTBEATS_PER_MANAGER
    assert stretched_period(5.0, 2500, 3) == 2500 / (3 * HEARTBEATS_PER_MANAGER)
    assert 2500 / stretched_period(5.0, 2500, 3) / 3 <= HEARTBEATS_PER_MANAGER
