"""A manager's leases renewed from a thread of its own, against a real etcd: a lease outlives an event loop that
is busy for longer than its TTL, lapses once the loop has been silent past the keeper's patience, and shows lost
when etcd no longer has it."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from swarm_agent.manager.lease_keeper import LeaseKeeper
from swarm_agent.store.etcd import EtcdClient

pytestmark = pytest.mark.integration
TTL = 2


@pytest.fixture
async def client(etcd) -> AsyncIterator[EtcdClient]:
    client = EtcdClient([etcd.client_url])
    yield client
    await client.close()


async def kept(keeper: LeaseKeeper, client: EtcdClient) -> int:
    lease = await client.lease_grant(TTL)
    keeper.hold(lease, TTL)
    keeper.start()
    return lease


async def test_a_lease_outlives_an_event_loop_busy_for_longer_than_its_ttl(client):
    keeper = LeaseKeeper(client, patience=30.0)
    lease = await kept(keeper, client)
    try:
        time.sleep(3 * TTL)  # the event loop does nothing else meanwhile, as a leader deep in a long pass
        assert not keeper.lost(lease)
        assert await client.lease_keepalive(lease) > 0, "etcd let the lease lapse while the loop was busy"
    finally:
        await keeper.close()


async def test_a_silent_event_loop_lets_its_leases_lapse(client):
    keeper = LeaseKeeper(client, patience=1.0)
    lease = await kept(keeper, client)
    try:
        time.sleep(1.0 + 2 * TTL)  # past the patience, then past the TTL with no renewal
        assert keeper.lost(lease)
        assert await client.lease_keepalive(lease) <= 0, "a stuck loop's lease was still renewed"
    finally:
        await keeper.close()


async def test_a_lease_etcd_no_longer_has_shows_lost(client):
    keeper = LeaseKeeper(client, patience=30.0)
    lease = await kept(keeper, client)
    try:
        await client.lease_revoke(lease)
        deadline = time.monotonic() + 10
        while not keeper.lost(lease):
            assert time.monotonic() < deadline, "the keeper did not notice a revoked lease"
            await asyncio.sleep(0.1)
        # Dropped leases are neither renewed nor reported held.
        keeper.drop(lease)
        assert keeper.lost(lease)
    finally:
        await keeper.close()
