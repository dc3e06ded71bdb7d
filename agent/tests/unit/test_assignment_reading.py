"""A worker reads each assignment's tasks, keeping the models of those that did not change."""

from swarm_agent.api.models import TaskState
from swarm_agent.worker.session import read_tasks

from cluster_sim import make_service, make_task

SERVICE = make_service("s1", replicas=2)


def wire(task_id: str, desired: TaskState = TaskState.RUNNING) -> dict:
    return make_task(task_id, SERVICE, slot=1, node="n1", state=TaskState.ASSIGNED, desired=desired).wire()


def test_unchanged_tasks_keep_their_models_changed_and_new_ones_are_read_and_gone_ones_dropped():
    first, read_from = read_tasks([wire("t1"), wire("t2")], {}, {})
    assert set(first) == {"t1", "t2"} and first["t2"].DesiredState == TaskState.RUNNING

    second, read_from = read_tasks([wire("t1"), wire("t2", TaskState.SHUTDOWN), wire("t3")], first, read_from)
    assert second["t1"] is first["t1"]
    assert second["t2"] is not first["t2"] and second["t2"].DesiredState == TaskState.SHUTDOWN
    assert set(second) == {"t1", "t2", "t3"} and set(read_from) == set(second)

    third, _ = read_tasks([wire("t3")], second, read_from)
    assert third == {"t3": second["t3"]} and third["t3"] is second["t3"]
