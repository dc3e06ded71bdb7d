"""The store against a real etcd: compare-and-swap writes, unique names, the watched cache, leases."""

import asyncio

import pytest

from swarm_agent.api.models import Node, Service, ServiceSpec, Task
from swarm_agent.store.etcd import EtcdClient
from swarm_agent.store.state import SESSIONS, Cache, Conflict, NameConflict, Store

pytestmark = pytest.mark.integration
# How long a test waits for the cache to hold its writes: a loaded machine can hold the watch back for seconds.
SETTLE = 30.0


def service(service_id: str, name: str) -> Service:
    spec = ServiceSpec.model_validate({"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}})
    return Service(ID=service_id, Spec=spec)


@pytest.fixture
async def store(etcd):
    client = EtcdClient([etcd.client_url])
    yield Store(client)
    await client.close()


async def test_updates_are_compare_and_swap(store):
    created = await store.create(service("s1", "web"))
    first = await store.get(Service, "s1")
    second = await store.get(Service, "s1")
    assert first.Version.Index == second.Version.Index == created.Version.Index
    first.Spec.Mode.Replicated.Replicas = 3
    await store.update(first)
    second.Spec.Mode.Replicated.Replicas = 7
    with pytest.raises(Conflict, match="out of sequence"):
        await store.update(second)
    assert (await store.get(Service, "s1")).Spec.Mode.Replicated.Replicas == 3


async def test_service_names_are_unique_across_create_and_rename(store):
    await store.create(service("s1", "web"))
    await store.create(service("s2", "api"))
    with pytest.raises(NameConflict):
        await store.create(service("s3", "web"))
    original = await store.get(Service, "s2")
    renamed = original.model_copy(deep=True)
    renamed.Spec.Name = "web"
    with pytest.raises(NameConflict):
        await store.update(renamed, previous=original)
    renamed.Spec.Name = "api2"
    await store.update(renamed, previous=original)
    # The old name is free again, and nothing was half-written.
    await store.create(service("s4", "api"))
    assert sorted(s.Spec.Name for s in await store.list(Service)) == ["api", "api2", "web"]
    await store.delete(await store.get(Service, "s1"))
    await store.create(service("s5", "web"))


async def test_apply_skips_only_stale_objects(store):
    spec = service("s", "x").Spec.TaskTemplate
    tasks = [await store.create(Task(ID=f"t{i}", ServiceID="s", Spec=spec)) for i in range(3)]
    stale = tasks[1].model_copy(deep=True)
    fresh = await store.get(Task, "t1")
    fresh.Slot = 9
    await store.update(fresh)
    for task in tasks:
        task.Slot = 1
    refused = await store.apply(updates=[tasks[0], stale, tasks[2]], creates=[Task(ID="t9", ServiceID="s", Spec=spec)])
    assert refused == 1
    slots = {t.ID: t.Slot for t in await store.list(Task)}
    assert slots == {"t0": 1, "t1": 9, "t2": 1, "t9": None}


async def test_cache_follows_writes_and_lease_expiry(store):
    cache = Cache(store.etcd)
    runner = asyncio.create_task(cache.run())
    try:
        await cache.ready()
        await store.create(Node(ID="n1"))
        spec = service("s", "x").Spec.TaskTemplate
        await store.create(Task(ID="t1", ServiceID="s", NodeID="n1", Spec=spec))
        await cache.barrier(timeout=SETTLE)
        assert "n1" in cache.state.nodes
        assert cache.state.tasks_by_node["n1"] == {"t1"}
        moved = await store.get(Task, "t1")
        moved.NodeID = "n2"
        await store.update(moved)
        await cache.barrier(timeout=SETTLE)
        assert cache.state.tasks_by_node["n1"] == set() and cache.state.tasks_by_node["n2"] == {"t1"}

        lease = await store.etcd.lease_grant(1)
        await store.put_json(SESSIONS + "n1", {"manager": "m"}, lease=lease)
        await cache.barrier(timeout=SETTLE)
        assert "n1" in cache.state.sessions
        revision = cache.revision
        # Nobody renews the lease: etcd deletes the session and the cache sees it go.
        for _ in range(40):
            revision = await cache.wait_change(revision, timeout=0.5)
            if "n1" not in cache.state.sessions:
                break
        assert "n1" not in cache.state.sessions
    finally:
        runner.cancel()


async def test_gossip_keyring_is_made_once_and_rotated_newest_first_keeping_three(store):
    import time
    from types import SimpleNamespace

    from swarm_agent.api.models import GOSSIP_KEY_ROTATION_LABEL, Swarm, SwarmSpec
    from swarm_agent.manager import control
    from swarm_agent.store.state import GOSSIP_KEY

    cache = Cache(store.etcd)
    runner = asyncio.create_task(cache.run())

    async def keyring_aged(hours: float) -> list[str]:
        """Make the keyring look rotated ``hours`` ago, let the loop have its look, and return the keys."""
        await store.put_json(GOSSIP_KEY, {"keys": cache.state.gossip_keys, "rotated": time.time() - hours * 3600})
        await cache.barrier(timeout=SETTLE)
        await loop.ensure_gossip_keys()
        await cache.barrier(timeout=SETTLE)
        return list(cache.state.gossip_keys)

    try:
        await cache.ready()
        loop = control.ControlLoop(SimpleNamespace(store=store, cache=cache))
        await loop.ensure_gossip_keys()
        await cache.barrier(timeout=SETTLE)
        first = list(cache.state.gossip_keys)
        assert len(first) == 1
        assert await keyring_aged(11.9) == first, "no rotation before the default 12 hours"
        for _ in range(3):
            await keyring_aged(12.1)
        keys = cache.state.gossip_keys
        assert len(keys) == 3 and len(set(keys)) == 3 and first[0] not in keys

        # The period is a swarm setting.
        await store.put_cluster(Swarm(ID="c1", Spec=SwarmSpec(Labels={GOSSIP_KEY_ROTATION_LABEL: "30m"})),
                                create=True)
        await cache.barrier(timeout=SETTLE)
        assert (await keyring_aged(0.6))[1:] == keys[:2], "rotated after 36 minutes with a 30-minute period"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_address_claims_report_exactly_the_ones_somebody_else_holds(store):
    from swarm_agent.store.state import address_key

    first = {address_key("n", "10.0.0.2"): "task:a", address_key("n", "10.0.0.3"): "task:b"}
    assert await store.claim_addresses(first) == set()
    second = {address_key("n", "10.0.0.3"): "task:c", address_key("n", "10.0.0.4"): "task:d"}
    assert await store.claim_addresses(second) == {address_key("n", "10.0.0.3")}
    assert (await store.etcd.get(address_key("n", "10.0.0.4"))).value == b"task:d", "the free one is taken"
    assert (await store.etcd.get(address_key("n", "10.0.0.3"))).value == b"task:b", "the held one stays"


async def test_control_loop_waits_for_its_own_writes_behind_a_lagging_cache(store, monkeypatch):
    """A busy manager's watch can lag its writes by seconds: the orchestrator must not create a service's
    tasks again because the cache does not show them yet."""
    from types import SimpleNamespace

    from swarm_agent.manager import control

    advance = Cache._advance

    async def lagging(self, revision):
        await asyncio.sleep(0.5)
        await advance(self, revision)

    replicated = service("s1", "web")
    replicated.Spec.Mode.Replicated.Replicas = 200  # written in several transactions
    await store.create(replicated)
    cache = Cache(store.etcd)
    runner = asyncio.create_task(cache.run())
    try:
        await cache.ready()
        monkeypatch.setattr(Cache, "_advance", lagging)
        monkeypatch.setattr(control, "BATCH_WINDOW", 0.0)
        loop = asyncio.create_task(control.ControlLoop(SimpleNamespace(store=store, cache=cache)).run())
        await asyncio.sleep(4)  # several ticks, each woken by a change of its own
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        tasks = [t for t in await store.list(Task) if t.ServiceID == "s1"]
        assert sorted(t.Slot for t in tasks) == list(range(1, 201))
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_sibling_client_renews_leases_while_every_connection_of_the_first_is_held(store):
    lease = await store.etcd.lease_grant(30)
    pool = store.etcd._http().connector
    watches = [store.etcd.watch_prefix(f"/busy/{i}", 1) for i in range(pool.limit)]
    try:
        for watch in watches:  # each open watch stream holds one of the pool's connections
            await anext(watch)
        assert len(pool._acquired) == pool.limit
        leases = store.etcd.sibling(store.etcd.endpoints)
        try:
            assert await leases.lease_keepalive(lease) > 0
        finally:
            await leases.close()
    finally:
        for watch in watches:
            await watch.aclose()
