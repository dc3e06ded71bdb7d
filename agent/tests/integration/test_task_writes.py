"""Task status writes coalesced into few etcd transactions, against a real etcd: compare-and-swap kept."""

import asyncio

import pytest

from swarm_agent.api.models import Task, TaskState, TaskStatus
from swarm_agent.manager.task_writes import TaskWrites
from swarm_agent.store.etcd import EtcdClient
from swarm_agent.store.state import MAX_TXN_OPS, Store

pytestmark = pytest.mark.integration

SPEC = {"ContainerSpec": {"Image": "busybox"}}


@pytest.fixture
async def store(etcd):
    client = EtcdClient([etcd.client_url])
    yield Store(client)
    await client.close()


def counting_txns(store: Store) -> list[int]:
    """Count the transactions ``store`` sends: one entry (its number of compares) per transaction."""
    calls: list[int] = []
    txn = store.etcd.txn

    async def counted(compare, success, failure=()):
        calls.append(len(compare))
        return await txn(compare, success, failure)

    store.etcd.txn = counted  # type: ignore[method-assign]
    return calls


def moved(task: Task, state: TaskState) -> Task:
    changed = task.model_copy()
    changed.Version = task.Version.model_copy()
    changed.Status = TaskStatus(State=state)
    return changed


async def test_reports_share_transactions_and_a_stale_state_never_overwrites_a_newer_one(store):
    await store.apply(creates=[Task(ID=f"t{i}", ServiceID="s", Spec=SPEC) for i in range(3)])
    read = {t.ID: t for t in await store.list(Task)}
    # t1 moves on behind the reader's back: what was read of it is stale now.
    newer = read["t1"].model_copy(deep=True)
    newer.Status = TaskStatus(State=TaskState.RUNNING)
    await store.update(newer)
    calls = counting_txns(store)
    writes = TaskWrites(store, lambda: 0)
    results = await asyncio.gather(
        writes.write([moved(read["t0"], TaskState.RUNNING)]),
        writes.write([moved(read["t1"], TaskState.PREPARING)]),
        # t0 again, from the revision the first write replaces: it cannot share the first one's transaction
        # (etcd refuses a key written twice in one) and must lose to it.
        writes.write([moved(read["t2"], TaskState.STARTING), moved(read["t0"], TaskState.FAILED)]),
    )
    assert results == [[True], [False], [True, False]]
    states = {t.ID: t.Status.State for t in await store.list(Task)}
    assert states == {"t0": TaskState.RUNNING, "t1": TaskState.RUNNING, "t2": TaskState.STARTING}
    # The three reports' first tasks in one transaction (refused for t1, then t0 and t2 without it), the second t0 in one.
    assert calls == [3, 2, 1]


async def test_writes_fill_transactions_up_to_the_limit_etcd_accepts(store):
    count = MAX_TXN_OPS + 2
    await store.apply(creates=[Task(ID=f"t{i:03}", ServiceID="s", Spec=SPEC) for i in range(count)])
    tasks = await store.list(Task)
    calls = counting_txns(store)
    results = await TaskWrites(store, lambda: 0).write([moved(t, TaskState.RUNNING) for t in tasks])
    assert results == [True] * count
    assert calls == [MAX_TXN_OPS, 2]
    assert {t.Status.State for t in await store.list(Task)} == {TaskState.RUNNING}


async def test_an_unreachable_etcd_fails_the_report_instead_of_acknowledging_it(store):
    await store.apply(creates=[Task(ID="t0", ServiceID="s", Spec=SPEC)])
    task = await store.get(Task, "t0")
    unreachable = EtcdClient(["http://127.0.0.1:9"], timeout=1)
    with pytest.raises(Exception, match="no etcd endpoint answered"):
        await TaskWrites(Store(unreachable), lambda: 0).write([moved(task, TaskState.RUNNING)])
    await unreachable.close()
    assert (await store.get(Task, "t0")).Status.State == task.Status.State


async def test_a_write_is_the_base_of_the_next_one_until_the_cache_holds_it(store):
    await store.apply(creates=[Task(ID="t0", ServiceID="s", Spec=SPEC)])
    cached = await store.get(Task, "t0")  # what a cache trailing the writes below would still hold
    cache_revision = cached.Version.Index
    writes = TaskWrites(store, lambda: cache_revision)
    assert await writes.write([moved(cached, TaskState.STARTING)]) == [True]
    # The next report is checked against the write, not the cached task: it is not refused as stale.
    base = writes.latest(cached)
    assert base.Status.State == TaskState.STARTING and base.Version.Index > cached.Version.Index
    assert await writes.write([moved(base, TaskState.RUNNING)]) == [True]
    stored = await store.get(Task, "t0")
    assert stored.Status.State == TaskState.RUNNING
    # Once the cache holds the writes, it is the base again.
    cache_revision = stored.Version.Index
    assert await writes.write([moved(cached, TaskState.FAILED)]) == [False]  # and a stale base still loses
    assert writes.latest(stored) is stored
