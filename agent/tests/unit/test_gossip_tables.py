"""Replicated tables: Lamport order, tombstones, ownership, and convergence whatever the delivery order."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_agent.net.gossip.messages import EntryUpdate
from swarm_agent.net.gossip.tables import Change, Entry, LamportClock, TableStore


def test_lamport_clock() -> None:
    clock = LamportClock()
    assert clock.increment() == 1
    clock.witness(10)
    assert clock.increment() == 11
    clock.witness(3)
    assert clock.time == 11


def test_local_put_and_delete() -> None:
    store = TableStore("a", tombstone_ttl=60.0)
    update, change = store.put("endpoints", "t1", {"ip": "10.0.0.5"})
    assert update == EntryUpdate("endpoints", "t1", "a", 1, {"ip": "10.0.0.5"})
    assert change == Change("endpoints", "t1", {"ip": "10.0.0.5"})
    assert store.entries("endpoints") == {"t1": Entry("a", {"ip": "10.0.0.5"}, 1)}
    update, change = store.delete("endpoints", "t1", now=5.0)
    assert update.value is None and update.ltime == 2 and change.value is None
    assert store.entries("endpoints") == {}
    assert store.delete("endpoints", "t1", now=5.0) is None      # already gone: nothing to send
    assert store.reap(now=64.0) == 0
    assert store.reap(now=65.0) == 1
    assert store.snapshot() == []


def test_values_are_copied_both_ways() -> None:
    store = TableStore("a", 60.0)
    value = {"ports": [1, 2]}
    store.put("t", "k", value)
    value["ports"].append(3)
    store.entries("t")["k"].value["ports"].append(4)
    assert store.entries("t")["k"].value == {"ports": [1, 2]}


@pytest.mark.parametrize("table, key, value, message", [
    ("", "k", {}, "table ''"),
    ("t", "", {}, "key ''"),
    ("t", "k", [1], "expected a dict"),
    ("t", "k", {"x": {1, 2}}, "cannot be sent as JSON"),
    ("t", "k", {"x": float("nan")}, "cannot be sent as JSON"),
])
def test_bad_writes_are_refused(table, key, value, message: str) -> None:
    store = TableStore("a", 60.0)
    with pytest.raises(ValueError, match=message):
        store.put(table, key, value)
    assert store.snapshot() == [] and store.clock.time == 0


def test_only_the_owner_changes_an_entry() -> None:
    store = TableStore("a", 60.0)
    store.merge(EntryUpdate("t", "k", "b", 4, {"v": 1}), now=0.0, owner_live=True)
    with pytest.raises(ValueError, match="owned by node b"):
        store.put("t", "k", {"v": 2})
    with pytest.raises(ValueError, match="owned by node b"):
        store.delete("t", "k", now=0.0)
    assert store.entries("t")["k"].owner == "b"


def test_higher_lamport_time_wins_and_tombstones_beat_older_puts() -> None:
    store = TableStore("a", 60.0)
    assert store.merge(EntryUpdate("t", "k", "b", 5, {"v": 5}), 0.0, True).changes == (Change("t", "k", {"v": 5}),)
    assert not store.merge(EntryUpdate("t", "k", "b", 3, {"v": 3}), 0.0, True).accepted
    result = store.merge(EntryUpdate("t", "k", "b", 6, None), 0.0, True)
    assert result.accepted and result.changes == (Change("t", "k", None),)
    assert not store.merge(EntryUpdate("t", "k", "b", 5, {"v": 5}), 0.0, True).accepted
    assert store.entries("t") == {}
    # Every receipt moves the clock past what was seen, so a later local write orders after it.
    assert store.clock.time == 6


def test_updates_of_dead_or_unknown_owners_are_ignored() -> None:
    store = TableStore("a", 60.0)
    result = store.merge(EntryUpdate("t", "k", "gone", 5, {"v": 1}), 0.0, owner_live=False)
    assert not result.accepted and store.entries("t") == {}


def test_dropping_an_owner_removes_its_entries_and_tombstones() -> None:
    store = TableStore("a", 60.0)
    store.put("t", "mine", {"v": 0})
    store.merge(EntryUpdate("t", "x", "b", 2, {"v": 1}), 0.0, True)
    store.merge(EntryUpdate("u", "y", "b", 3, {"v": 2}), 0.0, True)
    store.merge(EntryUpdate("u", "z", "b", 4, None), 0.0, True)
    gone = store.drop_owner("b")
    assert sorted(gone, key=lambda c: c.key) == [Change("t", "x", None), Change("u", "y", None)]
    assert [u.key for u in store.snapshot()] == ["mine"]
    # Back from the dead, with a fresh clock: its new entries are taken again.
    assert store.merge(EntryUpdate("t", "x", "b", 1, {"v": 9}), 0.0, True).accepted


def test_own_stale_entries_are_overridden() -> None:
    store = TableStore("a", 60.0)
    store.put("t", "k", {"v": "new life"})                    # ltime 1 after a restart
    # Our own entry from before the restart, same Lamport time but another value:
    result = store.merge(EntryUpdate("t", "k", "a", 1, {"v": "old life"}), 0.0, True)
    assert result.correction.value == {"v": "new life"} and result.correction.ltime == 2
    # An entry we no longer have: deleted, above its Lamport time.
    result = store.merge(EntryUpdate("t", "gone", "a", 7, {"v": 1}), 0.0, True)
    assert result.correction == EntryUpdate("t", "gone", "a", 8, None)
    assert store.entries("t") == {"k": Entry("a", {"v": "new life"}, 2)}
    # What we hold coming back is no news.
    assert store.merge(EntryUpdate("t", "k", "a", 2, {"v": "new life"}), 0.0, True) == type(result)()


# Updates from a few owners to a few keys: each owner stamps its writes with increasing Lamport times.
_updates = st.lists(
    st.tuples(st.sampled_from(["b", "c", "d"]), st.sampled_from(["k1", "k2", "k3"]),
              st.one_of(st.none(), st.integers(0, 3).map(lambda n: {"n": n}))),
    max_size=25,
).map(lambda writes: [EntryUpdate("t", key, owner, ltime, value)
                      for ltime, (owner, key, value) in enumerate(writes, start=1)])


@given(_updates, st.randoms(use_true_random=False))
def test_any_delivery_order_converges(updates: list[EntryUpdate], rnd) -> None:
    def replay(order: list[EntryUpdate]) -> tuple[dict, dict]:
        store = TableStore("a", 60.0)
        seen: dict = {}
        for update in order:
            for change in store.merge(update, 0.0, owner_live=True).changes:
                seen[change.key] = change.value
        return store.entries("t"), {k: v for k, v in seen.items() if v is not None}

    shuffled = updates * 2      # duplicates too
    rnd.shuffle(shuffled)
    in_order, told_in_order = replay(updates)
    out_of_order, told_out_of_order = replay(shuffled)
    assert in_order == out_of_order
    # Consumers following the callbacks end with what entries() says.
    assert told_in_order == {k: e.value for k, e in in_order.items()} == told_out_of_order
    # The latest write of each key is what remains.
    latest = {}
    for update in updates:
        latest[update.key] = update.value
    assert {k: e.value for k, e in in_order.items()} == {k: v for k, v in latest.items() if v is not None}
