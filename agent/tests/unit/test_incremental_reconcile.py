"""Which services the leader's pass reconciles: those that moved since a pass left them settled."""

from types import SimpleNamespace

from cluster_sim import make_node, make_service, make_task

from swarm_agent.api.models import TaskState
from swarm_agent.manager.control import ControlLoop
from swarm_agent.manager.orchestrator import Plan
from swarm_agent.store.state import Snapshot


def snapshot_with(*services, tasks=(), nodes=()) -> Snapshot:
    state = Snapshot()
    for service in services:
        state.services[service.ID] = service
        state.touch_service(service.ID)
    for task in tasks:
        state.tasks[task.ID] = task
        state.index_task(None, task)
    for node in nodes:
        state.nodes[node.ID] = node
    return state


def loop_over(state: Snapshot) -> ControlLoop:
    return ControlLoop(SimpleNamespace(cache=SimpleNamespace(state=state)))  # type: ignore[arg-type]


def settle(loop: ControlLoop, state: Snapshot, service_ids, plan: Plan | None = None) -> None:
    loop._note_settled(service_ids, dict(state.service_stamps), plan or Plan())


def test_only_services_that_moved_since_they_settled_are_reconciled():
    web, db = make_service("web"), make_service("db")
    state = snapshot_with(web, db, tasks=[make_task("w1", web, slot=1, node="n1"), make_task("d1", db, slot=1, node="n1")],
                          nodes=[make_node("n1")])
    loop = loop_over(state)
    assert loop._services_to_reconcile() is None, "the first pass covers everything"
    settle(loop, state, ["web", "db"])
    assert loop._services_to_reconcile() == set()

    moved = state.tasks["w1"].model_copy(update={"Status": state.tasks["w1"].Status.model_copy(
        update={"State": TaskState.FAILED})})
    state.index_task(state.tasks["w1"], moved)
    state.tasks["w1"] = moved
    assert loop._services_to_reconcile() == {"web"}

    state.nodes_stamp += 1  # a node went down, was drained or joined: everything again
    assert loop._services_to_reconcile() is None


def test_a_service_in_motion_is_not_settled():
    web, db, jobs = make_service("web"), make_service("db"), make_service("jobs")
    starting = make_task("w1", web, slot=1, node="n1", state=TaskState.STARTING)
    running = make_task("d1", db, slot=1, node="n1")
    state = snapshot_with(web, db, jobs, tasks=[starting, running])
    loop = loop_over(state)
    loop._services_to_reconcile()
    settle(loop, state, ["web", "db", "jobs"], Plan(create=[make_task("j1", jobs, slot=1)]))
    assert loop._services_to_reconcile() == {"web", "jobs"}, "a starting task and a pass that wrote"


def test_a_deleted_service_is_forgotten_with_its_last_task():
    web = make_service("web")
    task = make_task("w1", web, slot=1, node="n1")
    state = snapshot_with(web, tasks=[task])
    del state.services["web"]
    state.touch_service("web")
    state.forget_service("web")
    assert "web" in state.service_stamps, "its task is still there to be removed"
    del state.tasks["w1"]
    state.index_task(task, None)
    assert "web" not in state.service_stamps
