"""The cache's wire forms of tasks: made once per version of a task, never stale."""

from swarm_agent.api.models import Task, TaskState, TaskStatus
from swarm_agent.store.state import Snapshot

SPEC = {"ContainerSpec": {"Image": "busybox"}}


def test_a_tasks_wire_form_is_reused_until_the_task_changes_and_dropped_with_it() -> None:
    state = Snapshot()
    first = Task(ID="t1", ServiceID="s", NodeID="n1", Spec=SPEC)
    state.tasks["t1"] = first
    state.index_task(None, first)
    made = state.task_wire(first)
    assert made == first.wire() and state.task_wire(first) is made
    # The cache replaces a task with a new object on every change: its wire form follows.
    second = first.model_copy()
    second.Status = TaskStatus(State=TaskState.RUNNING)
    state.tasks["t1"] = second
    state.index_task(first, second)
    assert state.task_wire(second)["Status"]["State"] == "running"
    del state.tasks["t1"]
    state.index_task(second, None)
    assert "t1" not in state._task_wires
