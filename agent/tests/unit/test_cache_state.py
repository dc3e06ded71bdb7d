"""The store's own bookkeeping: watch batches applied in whole revisions, task wire forms never stale,
writes split into transactions etcd accepts."""

import asyncio

from swarm_agent.api.models import Task, TaskState, TaskStatus
from swarm_agent.store import state as state_module
from swarm_agent.store.etcd import KeyValue, WatchEvent
from swarm_agent.store.state import TABLES, Cache, Snapshot

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


def test_a_nodes_assignment_stamp_moves_when_its_node_must_act_not_on_each_reported_state() -> None:
    state = Snapshot()
    task = Task(ID="t1", ServiceID="s", NodeID="n1", Spec=SPEC)
    state.index_task(None, task)

    def change(**fields: object) -> bool:
        nonlocal task
        before = state.assignment_stamp("n1")
        changed = task.model_copy(update=fields)
        state.index_task(task, changed)
        task = changed
        return state.assignment_stamp("n1") != before

    for progress in (TaskState.ACCEPTED, TaskState.STARTING, TaskState.RUNNING):
        assert not change(Status=TaskStatus(State=progress), UpdatedAt="later")
    assert change(Status=TaskStatus(State=TaskState.FAILED, Err="exit 1"))  # an ended task is the node's concern
    assert change(DesiredState=TaskState.SHUTDOWN)
    assert change(Spec=Task(ID="x", ServiceID="s", Spec={"ContainerSpec": {"Image": "busybox:2"}}).Spec)
    service_stamp = state.service_stamps["s"]
    assert not change(Status=TaskStatus(State=TaskState.FAILED, Err="exit 2"))
    assert state.service_stamps["s"] != service_stamp  # the orchestrator still sees every report


def put(task: Task, revision: int) -> WatchEvent:
    return WatchEvent("put", KeyValue(TABLES[Task] + task.ID, task.model_dump_json().encode(), revision, 1))


async def test_a_batch_lets_other_work_run_between_whole_revisions_only(monkeypatch) -> None:
    monkeypatch.setattr(state_module, "YIELD_EVERY", 1)
    new = {tid: Task(ID=tid, ServiceID="s", Spec=SPEC) for tid in ("t1", "t2", "t3", "t4")}
    running = new["t1"].model_copy(update={"Status": TaskStatus(State=TaskState.RUNNING)})
    # Revision 1 makes t1 and t2 in one transaction, 2 moves t1 on, 3 makes t3, 4 makes t4.
    events = [put(new["t1"], 1), put(new["t2"], 1), put(running, 2), put(new["t3"], 3), put(new["t4"], 4)]
    cache = Cache(None)  # type: ignore[arg-type]  # applying a batch reads nothing from etcd
    seen: list[dict[str, str]] = []
    done = False

    async def observe() -> None:
        while not done:
            seen.append({tid: t.Status.State.value for tid, t in cache.state.tasks.items()})
            await asyncio.sleep(0)

    observer = asyncio.create_task(observe())
    await asyncio.sleep(0)
    await cache._apply_batch(events)
    done = True
    await observer
    # t1's first state is skipped for its last: nobody sees t2 without t1 (revision 1), nor t1 new.
    assert seen == [{}, {"t1": "running", "t2": "new"}, {"t1": "running", "t2": "new", "t3": "new"}]
    assert {tid: t.Status.State.value for tid, t in cache.state.tasks.items()} == {
        "t1": "running", "t2": "new", "t3": "new", "t4": "new"}


def test_equal_task_specs_are_one_object_in_the_cache() -> None:
    from swarm_agent.api.models import Service, ServiceSpec

    def put_service(service: Service, revision: int) -> WatchEvent:
        return WatchEvent("put", KeyValue(TABLES[Service] + service.ID, service.model_dump_json().encode(),
                                          revision, 1))

    cache = Cache(None)  # type: ignore[arg-type]  # applying events reads nothing from etcd
    spec = ServiceSpec.model_validate({"Name": "web", "TaskTemplate": SPEC})
    cache._apply("put", put_service(Service(ID="s", Spec=spec), 1).kv)
    template = cache.state.services["s"].Spec.TaskTemplate
    # A scaled service keeps its template object; a new task of it holds that object, and so does its next state.
    scaled = Service(ID="s", Spec=ServiceSpec.model_validate({**spec.wire(), "Mode": {"Replicated": {"Replicas": 5}}}))
    cache._apply("put", put_service(scaled, 2).kv)
    assert cache.state.services["s"].Spec.TaskTemplate is template
    task = Task(ID="t1", ServiceID="s", NodeID="n1", Spec=SPEC)
    cache._apply("put", put(task, 3).kv)
    assert cache.state.tasks["t1"].Spec is template
    cache._apply("put", put(task.model_copy(update={"Status": TaskStatus(State=TaskState.RUNNING)}), 4).kv)
    assert cache.state.tasks["t1"].Spec is template
    # Another spec stays its own, equal to what was stored.
    other = Task(ID="t2", ServiceID="s", Spec={"ContainerSpec": {"Image": "busybox:2"}})
    cache._apply("put", put(other, 5).kv)
    assert cache.state.tasks["t2"].Spec is not template and cache.state.tasks["t2"].Spec == other.Spec


def test_guarded_writes_are_split_by_count_and_by_size() -> None:
    from swarm_agent.store.etcd import cmp_absent, op_put
    from swarm_agent.store.state import MAX_TXN_BYTES, MAX_TXN_OPS, _chunks

    small = [(cmp_absent(f"k{i}"), op_put(f"k{i}", "x")) for i in range(MAX_TXN_OPS + 1)]
    assert _chunks(small) == [range(0, MAX_TXN_OPS), range(MAX_TXN_OPS, MAX_TXN_OPS + 1)]
    big = "x" * (MAX_TXN_BYTES // 3)  # base64 makes it 4/3 as large: two fit, not three
    large = [(cmp_absent(f"k{i}"), op_put(f"k{i}", big)) for i in range(5)]
    assert _chunks(large) == [range(0, 2), range(2, 4), range(4, 5)]
    assert _chunks([]) == []


async def test_a_revision_wakes_the_assignment_streams_it_concerns_only() -> None:
    from swarm_agent.api.models import Service, ServiceSpec

    def put_obj(model: type, obj, revision: int) -> KeyValue:
        return KeyValue(TABLES[model] + obj.ID, obj.model_dump_json().encode(), revision, 1)

    cache = Cache(None)  # type: ignore[arg-type]  # applying events reads nothing from etcd
    spec = ServiceSpec.model_validate({"Name": "web", "TaskTemplate": SPEC})
    cache._apply("put", put_obj(Service, Service(ID="s", Spec=spec), 1))
    cache._apply("put", put(Task(ID="t1", ServiceID="s", NodeID="n1", Spec=SPEC), 2).kv)
    await cache._advance(2)

    async def woken(change) -> set[str]:
        """The nodes whose streams (waiting on n1, n2 and n3) wake when ``change`` is applied."""
        waits = {node: asyncio.create_task(cache.wait_assignment_change(node, cache.state.assignment_stamp(node), 5))
                 for node in ("n1", "n2", "n3")}
        await asyncio.sleep(0)
        change()
        await cache._advance(cache.revision + 1)
        await asyncio.sleep(0.1)  # a woken wait ends a few loop turns later; the others wait 5 s
        done = {node for node, wait in waits.items() if wait.done()}
        for wait in waits.values():
            wait.cancel()
        await asyncio.gather(*waits.values(), return_exceptions=True)
        return done

    # The service's name and endpoint go to n1, which runs its task; n2 and n3 have nothing to recompute.
    scaled = Service(ID="s", Spec=ServiceSpec.model_validate({**spec.wire(), "Mode": {"Replicated": {"Replicas": 2}}}))
    assert await woken(lambda: cache._apply("put", put_obj(Service, scaled, 3))) == {"n1"}
    assert await woken(lambda: cache._apply("put", put(Task(ID="t2", ServiceID="s", NodeID="n2", Spec=SPEC), 4).kv)) == {"n2"}
    # A new service with no tasks yet concerns no node.
    other = Service(ID="s2", Spec=ServiceSpec.model_validate({"Name": "db", "TaskTemplate": SPEC}))
    assert await woken(lambda: cache._apply("put", put_obj(Service, other, 5))) == set()
    # The gossip keyring goes to every node: every stream looks.
    keyring = KeyValue(state_module.GOSSIP_KEY, b'{"keys": ["k1"], "rotated": 1}', 6, 1)
    assert await woken(lambda: cache._apply("put", keyring)) == {"n1", "n2", "n3"}
