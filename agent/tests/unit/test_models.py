"""The spec models: Swarm's defaults, Go-style durations, Go's JSON decoding rules, and errors that name the field."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from swarm_agent.api.duration import format_duration, parse_duration
from swarm_agent.api.errors import describe_validation
from swarm_agent.api.models import NodeSpec, ServiceSpec, SwarmSpec, TaskState

MINIMAL = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}


def spec(**changes: object) -> dict:
    out = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}
    out.update(changes)
    return out


def test_swarm_defaults():
    service = ServiceSpec.model_validate(MINIMAL)
    assert service.Mode.Replicated.Replicas == 1
    assert service.TaskTemplate.RestartPolicy.Condition == "any"
    assert service.TaskTemplate.RestartPolicy.Delay == 5_000_000_000
    update = service.UpdateConfig
    assert (update.Parallelism, update.FailureAction, update.Monitor, update.Order) == (1, "pause", 5_000_000_000, "stop-first")
    assert service.EndpointSpec.Mode == "vip"
    cluster = SwarmSpec()
    assert cluster.Orchestration.TaskHistoryRetentionLimit == 5
    assert cluster.Dispatcher.HeartbeatPeriod == 5_000_000_000
    assert cluster.CAConfig.NodeCertExpiry == 90 * 24 * 3600 * 1_000_000_000


@pytest.mark.parametrize(
    "text,ns",
    [("1m30s", 90_000_000_000), ("500ms", 500_000_000), ("2h", 7_200_000_000_000), ("1.5s", 1_500_000_000),
     ("10", 10), ("0", 0), ("1h2m3s4ms", 3_723_004_000_000)],
)
def test_go_durations(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["1x", "s", "1m30", "m1", ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**15))
def test_durations_round_trip_through_their_printed_form(ns):
    printed = format_duration(ns)
    assert abs(parse_duration(printed) - ns) <= max(1, ns // 10**5)


def test_go_null_means_absent_and_names_fold_case():
    service = ServiceSpec.model_validate(
        {"name": "web", "Labels": None, "TaskTemplate": {"containerspec": {"Image": "b", "Env": None}},
         "Mode": {"replicated": {"Replicas": 3}}, "EndpointSpec": None}
    )
    assert service.Name == "web" and service.Labels is None
    assert service.Mode.Replicated.Replicas == 3
    assert NodeSpec.model_validate({"Labels": None}).Labels == {}


def test_exact_field_name_wins_over_a_folded_one():
    assert ServiceSpec.model_validate({**MINIMAL, "name": "other"}).Name == "web"


@pytest.mark.parametrize(
    "body,path",
    [
        (spec(TaskTemplate={"ContainerSpec": {}}), "TaskTemplate.ContainerSpec.Image: is required"),
        (spec(Mode={"Replicated": {"Replicas": -2}}), "Mode.Replicated.Replicas"),
        (spec(UpdateConfig={"Monitor": "soon"}), "UpdateConfig.Monitor: invalid duration 'soon'"),
        (spec(EndpointSpec={"Ports": [{"TargetPort": 80, "PublishedPort": 8080},
                                      {"TargetPort": 81, "PublishedPort": 8080}]}), "given twice"),
        (spec(EndpointSpec={"Mode": "dnsrr", "Ports": [{"TargetPort": 80, "PublishedPort": 8080}]}), "dnsrr"),
    ],
)
def test_errors_name_the_field(body, path):
    with pytest.raises(ValidationError) as err:
        ServiceSpec.model_validate(body)
    assert path in describe_validation(err.value)


def test_task_states_only_move_forward():
    order = list(TaskState)
    assert order.index(TaskState.RUNNING) < order.index(TaskState.SHUTDOWN)
    assert not TaskState.RUNNING.terminal and TaskState.FAILED.terminal and TaskState.COMPLETE.terminal
    assert all(a.rank < b.rank for a, b in zip(order, order[1:]))


def test_the_gossip_key_rotation_period_is_a_swarm_label_checked_like_a_field() -> None:
    assert SwarmSpec().gossip_key_rotation == 12 * 3600 * 10**9
    assert SwarmSpec(Labels={"swarm.gossip.key-rotation": "90m"}).gossip_key_rotation == 90 * 60 * 10**9
    for bad, words in (("59s", "at least 1m"), ("soon", "invalid duration"), ("-2h", "at least 1m")):
        with pytest.raises(ValidationError) as caught:
            SwarmSpec.model_validate({"Labels": {"swarm.gossip.key-rotation": bad}})
        message = describe_validation(caught.value)
        assert "Labels" in message and "swarm.gossip.key-rotation" in message and words in message, message
