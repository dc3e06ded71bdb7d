"""The swarm.cluster.swarm module's pure logic: settings laid over a swarm spec, membership, documentation.

Swarm specs "as the manager stores them" come from the agent's own SwarmSpec model, so a plan
that changes nothing here changes nothing against the real API either.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ansible_collections.swarm.cluster.plugins.modules import swarm as module
from ansible_collections.swarm.cluster.plugins.modules.swarm import (
    SETTINGS,
    SWARM_OPTIONS,
    duration_ns,
    given_settings,
    lay_over,
    membership,
    node_is_down,
    plan_update,
)
from swarm_agent.api.models import SwarmSpec

SECOND = 1_000_000_000


def stored(spec: dict[str, Any]) -> dict[str, Any]:
    """What the manager keeps (and GET /swarm returns as Spec) after receiving ``spec``."""
    return SwarmSpec.model_validate(spec).wire()


def params(**given: Any) -> dict[str, Any]:
    """Module parameters as AnsibleModule hands them over: every option present, unset ones None."""
    out: dict[str, Any] = {name: spec.get("default") for name, spec in SWARM_OPTIONS.items()}
    out.update(given)
    return out


DEFAULTS = stored({})
CHANGED = params(
    name="prod",
    labels={"env": "prod", "tier": 1},
    task_history_retention_limit=2,
    dispatcher_heartbeat_period="10s",
    node_cert_expiry="720h",
    snapshot_interval=5000,
    keep_old_snapshots=1,
    log_entries_for_slow_followers=100,
    heartbeat_tick=2,
    election_tick=20,
)


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("value, ns", [
    ("5s", 5 * SECOND), ("500ms", SECOND // 2), ("1h30m", 5400 * SECOND), ("0", 0),
    (5_000_000_000, 5 * SECOND), ("7776000000000000", 7_776_000_000_000_000),
])
def test_durations_in_go_notation_or_nanoseconds_as_community_docker(value: Any, ns: int) -> None:
    assert duration_ns(value) == ns


@pytest.mark.parametrize("value", [True, "5 seconds", "5x", ""])
def test_bad_durations_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        duration_ns(value)


def test_given_settings_are_wire_values_and_skip_unset_ones() -> None:
    assert given_settings(params()) == {}
    assert given_settings(params(labels={"n": 3, "empty": None}, dispatcher_heartbeat_period="2s")) == {
        "labels": {"n": "3", "empty": ""},
        "dispatcher_heartbeat_period": 2 * SECOND,
    }


def test_a_bad_duration_names_its_option() -> None:
    with pytest.raises(ValueError, match="^node_cert_expiry: invalid duration"):
        given_settings(params(node_cert_expiry="forever"))


# ------------------------------------------------------------------ plans


def test_every_setting_has_a_place_in_the_swarm_spec() -> None:
    for option, path in SETTINGS.items():
        assert option in SWARM_OPTIONS
        value: Any = DEFAULTS
        for key in path:
            assert isinstance(value, dict) and key in value, (option, path)
            value = value[key]


def test_no_settings_change_nothing() -> None:
    desired, changes = plan_update(DEFAULTS, params())
    assert changes == [] and desired == DEFAULTS


def test_settings_equal_to_the_stored_ones_change_nothing() -> None:
    same = params(name="default", labels={}, task_history_retention_limit=5, keep_old_snapshots=0,
                  dispatcher_heartbeat_period="5s", node_cert_expiry="2160h")
    assert plan_update(DEFAULTS, same)[1] == []
    # The API may leave out empty labels or send null: an empty dict given is the same.
    assert plan_update({**DEFAULTS, "Labels": None}, same)[1] == []
    assert plan_update({k: v for k, v in DEFAULTS.items() if k != "Labels"}, same)[1] == []


def test_every_setting_lands_in_its_wire_field_and_the_manager_keeps_it() -> None:
    desired, changes = plan_update(DEFAULTS, CHANGED)
    assert changes == list(SETTINGS)
    kept = stored(desired)
    assert kept["Name"] == "prod" and kept["Labels"] == {"env": "prod", "tier": "1"}
    assert kept["Orchestration"]["TaskHistoryRetentionLimit"] == 2
    assert kept["Dispatcher"]["HeartbeatPeriod"] == 10 * SECOND
    assert kept["CAConfig"]["NodeCertExpiry"] == 720 * 3600 * SECOND
    assert kept["Raft"] == {"SnapshotInterval": 5000, "KeepOldSnapshots": 1, "LogEntriesForSlowFollowers": 100,
                            "HeartbeatTick": 2, "ElectionTick": 20}
    # A second run against what the manager stored changes nothing.
    assert plan_update(kept, CHANGED)[1] == []


def test_unset_settings_keep_the_current_values() -> None:
    current = stored({"Name": "prod", "Labels": {"env": "prod"}, "Orchestration": {"TaskHistoryRetentionLimit": 1}})
    desired, changes = plan_update(current, params(heartbeat_tick=3))
    assert changes == ["heartbeat_tick"]
    assert desired["Name"] == "prod" and desired["Labels"] == {"env": "prod"}
    assert desired["Orchestration"]["TaskHistoryRetentionLimit"] == 1
    assert desired["Raft"]["HeartbeatTick"] == 3 and desired["Raft"]["ElectionTick"] == 10


def test_labels_replace_the_swarm_labels() -> None:
    current = stored({"Labels": {"a": "1", "b": "2"}})
    desired, changes = plan_update(current, params(labels={"a": "1"}))
    assert changes == ["labels"] and desired["Labels"] == {"a": "1"}


def test_the_plan_does_not_touch_the_spec_it_was_given() -> None:
    current = stored({})
    plan_update(current, CHANGED)
    assert current == DEFAULTS


def test_rotations_are_changes_every_time() -> None:
    _, changes = plan_update(DEFAULTS, params(rotate_worker_token=True, rotate_manager_token=True))
    assert changes == ["rotate_worker_token", "rotate_manager_token"]


def test_a_new_swarm_gets_the_given_settings_and_the_cluster_defaults() -> None:
    spec = lay_over({}, given_settings(params(task_history_retention_limit=1, node_cert_expiry="48h")))
    assert spec == {"Orchestration": {"TaskHistoryRetentionLimit": 1}, "CAConfig": {"NodeCertExpiry": 48 * 3600 * SECOND}}
    kept = stored(spec)
    assert kept["Orchestration"]["TaskHistoryRetentionLimit"] == 1 and kept["Name"] == "default"
    assert kept["Dispatcher"]["HeartbeatPeriod"] == 5 * SECOND


def test_settings_the_manager_refuses_are_refused_by_the_model_too() -> None:
    # The module leaves validation to the API; this shows the API does refuse, so errors come back to the user.
    desired, _ = plan_update(DEFAULTS, params(dispatcher_heartbeat_period="10ms"))
    with pytest.raises(ValueError, match="at least 100ms"):
        SwarmSpec.model_validate(desired)


# ------------------------------------------------------------------ membership


@pytest.mark.parametrize("info, role", [
    ({"NodeID": "", "LocalNodeState": "inactive", "ControlAvailable": False}, "none"),
    ({"NodeID": "n1", "LocalNodeState": "active", "ControlAvailable": False}, "worker"),
    ({"NodeID": "n1", "LocalNodeState": "error", "ControlAvailable": False}, "worker"),
    ({"NodeID": "", "LocalNodeState": "pending", "ControlAvailable": False}, "worker"),
    ({"NodeID": "n1", "LocalNodeState": "active", "ControlAvailable": True}, "manager"),
])
def test_membership_from_info(info: dict[str, Any], role: str) -> None:
    assert membership(info) == role


def test_only_down_or_unknown_nodes_are_down() -> None:
    assert node_is_down({"Status": {"State": "down"}}) and node_is_down({"Status": {"State": "unknown"}})
    assert not node_is_down({"Status": {"State": "ready"}}) and not node_is_down({"Status": {"State": "disconnected"}})


# ------------------------------------------------------------------ documentation


def test_documentation_matches_the_argument_spec() -> None:
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    assert set(documented) == set(SWARM_OPTIONS)
    for name, spec in SWARM_OPTIONS.items():
        doc = documented[name]
        assert doc["type"] == spec["type"], name
        assert doc.get("default") == spec.get("default"), name
        assert doc.get("choices") == spec.get("choices"), name
        assert doc.get("elements") == spec.get("elements"), name
    yaml.safe_load(module.EXAMPLES)
    assert set(yaml.safe_load(module.RETURN)) == {"swarm_facts", "actions", "changes"}


def test_the_join_token_is_never_logged() -> None:
    assert SWARM_OPTIONS["join_token"]["no_log"] is True
