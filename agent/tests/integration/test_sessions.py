"""Worker sessions under one lease per manager, against a real etcd: heartbeats noted in memory, a silent
node's session ended, another session's ID refused, a restarted manager taking its sessions over, a dead
manager's sessions going with its lease, a session ended through another manager refused afterwards, and most
of a manager's nodes falling silent together given longer."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest

from swarm_agent.manager.lease_keeper import LeaseKeeper
from swarm_agent.manager.sessions import MASS_SILENCE_MIN, MIN_LEASE_TTL, PERIODS_TO_EXPIRY, Sessions, SessionExpired
from swarm_agent.store.etcd import EtcdClient
from swarm_agent.store.state import SESSIONS, Cache, Store

pytestmark = pytest.mark.integration
# Seconds between heartbeats: a silent node's session ends after three, 6 s, which a heartbeat every second or
# more often outlasts on a loaded machine.
PERIOD = 2.0


class ManagerParts:
    """What the session table uses of a manager (its ID, store, lease client and keeper, and cache), each a real
    one on the test's etcd; ``start`` runs the cache, the keeper and the table as the manager would."""

    def __init__(self, node_id: str, url: str) -> None:
        etcd = EtcdClient([url])
        self.node_id = node_id
        self.store = Store(etcd)
        self.leases = etcd.sibling(etcd.endpoints)
        self.keeper = LeaseKeeper(etcd)
        self.cache = Cache(etcd)
        self.sessions = Sessions(self)  # type: ignore[arg-type]
        self._jobs: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.keeper.start()
        self._jobs = [asyncio.create_task(self.cache.run()), asyncio.create_task(self.sessions.run())]
        await self.cache.ready()

    async def stop(self) -> None:
        """As a killed manager: nothing renewed or ended any more, nothing revoked."""
        for job in self._jobs:
            job.cancel()
        for job in self._jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        self._jobs = []
        await self.keeper.close()
        await self.store.etcd.close()
        await self.leases.close()


@pytest.fixture
async def managers(etcd) -> AsyncIterator[Callable[[str], "asyncio.Future[ManagerParts]"]]:
    made: list[ManagerParts] = []

    async def make(node_id: str) -> ManagerParts:
        parts = ManagerParts(node_id, etcd.client_url)
        await parts.start()
        made.append(parts)
        return parts

    yield make
    for parts in made:
        if parts._jobs:
            await parts.stop()


async def record(parts: ManagerParts, node_id: str) -> tuple[dict, int] | None:
    kv = await parts.store.etcd.get(SESSIONS + node_id)
    return (json.loads(kv.value), kv.lease) if kv else None


async def until(what: str, check: Callable[[], "asyncio.Future[bool]"], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_heartbeats_keep_a_session_and_silence_ends_it(managers):
    m1 = await managers("m1")
    session = await m1.sessions.open("n1", "10.0.0.1", PERIOD)
    stored, lease = await record(m1, "n1")
    assert stored["session"] == session and stored["manager"] == "m1" and lease == m1.sessions.lease
    for _ in range(8):  # 8 s: past three periods
        await m1.sessions.heartbeat("n1", session, PERIOD)
        await asyncio.sleep(1)
    assert (await record(m1, "n1"))[0]["session"] == session
    with pytest.raises(SessionExpired, match="not the session of node n1"):
        await m1.sessions.heartbeat("n1", session + 1, PERIOD)

    async def gone() -> bool:
        return await record(m1, "n1") is None

    await until("the silent node's session to end", gone)
    with pytest.raises(SessionExpired):
        await m1.sessions.heartbeat("n1", session, PERIOD)


async def test_a_restarted_manager_takes_over_and_a_dead_ones_sessions_go_with_its_lease(managers):
    old = await managers("m1")
    first = await old.sessions.open("n1", "10.0.0.1", PERIOD)
    second = await old.sessions.open("n2", "10.0.0.2", PERIOD)
    await old.stop()  # killed: its lease is neither renewed nor revoked
    new = await managers("m1")
    # n1's node heartbeats to the restarted manager, which takes the session over under its own lease.
    await new.sessions.heartbeat("n1", first, PERIOD)
    assert (await record(new, "n1"))[1] == new.sessions.lease != old.sessions.lease

    async def n2_gone() -> bool:
        await new.sessions.heartbeat("n1", first, PERIOD)
        return await record(new, "n2") is None

    await until("the dead manager's session of n2 to go with its lease", n2_gone, timeout=MIN_LEASE_TTL + 15)
    assert (await record(new, "n1"))[0]["session"] == first
    with pytest.raises(SessionExpired):
        await new.sessions.heartbeat("n2", second, PERIOD)


async def test_a_session_ended_through_another_manager_is_refused_at_its_next_heartbeat(managers):
    m1, m2 = await managers("m1"), await managers("m2")
    session = await m1.sessions.open("n1", "10.0.0.1", PERIOD)
    await m2.sessions.end("n1")  # the node left through m2, or gossip found it dead

    async def refused() -> bool:
        try:
            await m1.sessions.heartbeat("n1", session, PERIOD)
        except SessionExpired:
            return True
        return False

    await until("m1 to refuse the ended session", refused)
    # A new session opens as usual.
    again = await m1.sessions.open("n1", "10.0.0.1", PERIOD)
    await m1.sessions.heartbeat("n1", again, PERIOD)


async def test_most_nodes_silent_together_are_given_longer_and_then_ended(managers):
    m1 = await managers("m1")
    nodes = [f"n{i}" for i in range(MASS_SILENCE_MIN + 2)]
    for node_id in nodes:
        await m1.sessions.open(node_id, "10.0.0.1", PERIOD)

    async def noticed() -> bool:
        return m1.sessions.deaf_since is not None

    await until("the manager to notice that all its nodes fell silent together", noticed)

    async def all_silent() -> bool:
        time = asyncio.get_running_loop().time()
        return all(held.expires <= time for held in m1.sessions.held.values())

    await until("three periods to pass without a heartbeat", all_silent)
    await asyncio.sleep(1.5)  # a sweep or more, well within the three periods more that deafness allows
    assert [await record(m1, node_id) is not None for node_id in nodes] == [True] * len(nodes)

    async def all_gone() -> bool:
        return all([await record(m1, node_id) is None for node_id in nodes])

    await until("the sessions to end after six periods", all_gone, timeout=PERIODS_TO_EXPIRY * PERIOD + 20)
    assert m1.sessions.held == {}
