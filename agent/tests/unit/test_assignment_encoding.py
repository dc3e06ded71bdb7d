"""A node's assignment line: its tasks' JSON made once per task version, and a digest that moves only with
what the node acts on."""

import json

from swarm_agent.api.models import Task, TaskState, TaskStatus
from swarm_agent.manager.dispatcher import _encoded
from swarm_agent.store.state import Snapshot

SPEC = {"ContainerSpec": {"Image": "busybox"}}
REST = {"services": {"s": "web"}, "managers": ["10.0.0.1:2377"], "gossip": {"keys": ["k"]}}


def line_and_digest(state: Snapshot, *tasks: Task) -> tuple[dict, str]:
    line, digest = _encoded(REST, [state.task_forms(t) for t in tasks])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line), digest


def test_the_line_is_the_whole_assignment_and_the_digest_ignores_reported_progress() -> None:
    state = Snapshot()
    t1 = Task(ID="t1", ServiceID="s", NodeID="n1", Spec=SPEC, DesiredState=TaskState.RUNNING)
    t2 = Task(ID="t2", ServiceID="s", NodeID="n1", Spec=SPEC, DesiredState=TaskState.RUNNING)
    sent, digest = line_and_digest(state, t1, t2)
    assert sent == {**REST, "tasks": [t1.wire(), t2.wire()]}
    # The same version of a task is encoded once.
    assert state.task_forms(t1).json is state.task_forms(t1).json

    def digest_after(**fields: object) -> str:
        return line_and_digest(state, t1.model_copy(update=fields), t2)[1]

    for progress in (TaskState.ACCEPTED, TaskState.STARTING, TaskState.RUNNING):
        assert digest_after(Status=TaskStatus(State=progress), UpdatedAt="later") == digest
    assert digest_after(Status=TaskStatus(State=TaskState.FAILED, Err="exit 1")) != digest
    assert digest_after(DesiredState=TaskState.SHUTDOWN) != digest
    assert _encoded({**REST, "managers": ["10.0.0.2:2377"]}, [state.task_forms(t1), state.task_forms(t2)])[1] != digest
    assert line_and_digest(state, t1)[1] != digest
