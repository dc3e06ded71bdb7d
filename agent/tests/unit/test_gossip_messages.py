"""Gossip message encoding, and the queue of piggybacked updates that keeps datagrams under their size."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_agent.net.gossip.broadcasts import BroadcastQueue
from swarm_agent.net.gossip.messages import (
    Ack,
    Alive,
    Dead,
    EntryUpdate,
    MalformedMessage,
    MemberRecord,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    decode,
    decode_packet,
    encode,
    encode_packet,
    packet_size,
)

names = st.text(min_size=1, max_size=20)
counts = st.integers(0, 2**40)
ports = st.integers(0, 65535)
addresses = st.ip_addresses().map(str)
values = st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.one_of(
    st.integers(-2**40, 2**40), st.text(max_size=10), st.booleans(), st.lists(st.integers(), max_size=3)),
    max_size=4))
entries = st.builds(EntryUpdate, names, names, names, counts, values)
records = st.builds(MemberRecord, names, addresses, ports, st.sampled_from(["alive", "suspect", "dead", "left"]),
                    counts)
messages = st.one_of(
    st.builds(Ping, counts, names, names),
    st.builds(Ack, counts, names),
    st.builds(PingReq, counts, names, addresses, ports, names, st.booleans(), st.floats(0, 10)),
    st.builds(Nack, counts, names),
    st.builds(Alive, names, addresses, ports, counts),
    st.builds(Suspect, names, counts, names),
    st.builds(Dead, names, counts, names),
    entries,
    st.builds(PushPull, names, st.booleans(), counts, st.lists(records, max_size=3).map(tuple),
              st.lists(entries, max_size=3).map(tuple)),
)


@given(messages)
def test_every_message_round_trips(message) -> None:
    assert decode(encode(message)) == message


@given(st.lists(messages, max_size=5))
def test_packets_round_trip_and_their_size_is_known(batch) -> None:
    encoded = [encode(m) for m in batch]
    packet = encode_packet(encoded)
    assert len(packet) == packet_size(sum(map(len, encoded)), len(encoded))
    assert decode_packet(packet) == (batch, [])


@pytest.mark.parametrize("raw, message", [
    ({"t": "ping", "seq": 1, "target": "a"}, "ping message: field 'source' is missing"),
    ({"t": "ping", "seq": -1, "target": "a", "source": "b"}, "field 'seq': expected an integer >= 0"),
    ({"t": "ping", "seq": True, "target": "a", "source": "b"}, "field 'seq'"),
    ({"t": "ack", "seq": 1, "source": ""}, "field 'source': expected a non-empty string"),
    ({"t": "alive", "node": "a", "address": "nowhere", "port": 1, "incarnation": 0},
     "field 'address': expected an IP address"),
    ({"t": "alive", "node": "a", "address": "10.0.0.1", "port": 70000, "incarnation": 0},
     r"field 'port': expected an integer 0..65535"),
    ({"t": "entry", "table": "t", "key": "k", "owner": "o", "ltime": 1, "value": [1]},
     "field 'value': expected an object or null"),
    ({"t": "ping-req", "seq": 1, "target": "a", "address": "10.0.0.1", "port": 1, "source": "b", "nack": 1,
      "wait": 0.1}, "field 'nack': expected true or false"),
    ({"t": "push-pull", "source": "a", "join": True, "ltime": 0, "members": [{"node": "b"}], "entries": []},
     r"push-pull message.members\[0\]: field 'address' is missing"),
    ({"t": "push-pull", "source": "a", "join": True, "ltime": 0, "members": {}, "entries": []},
     "field 'members': expected a list"),
    ({"t": "gossip"}, "unknown kind 'gossip'"),
    ([1], "expected an object"),
])
def test_bad_messages_name_the_field(raw, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        decode(json.dumps(raw).encode())


def test_a_bad_message_does_not_spoil_the_datagram() -> None:
    good = Ack(3, "a")
    packet = b"[" + encode(good) + b',{"t":"ack"},' + encode(good) + b"]"
    decoded, errors = decode_packet(packet)
    assert decoded == [good, good] and len(errors) == 1 and "field 'seq' is missing" in errors[0]
    assert decode_packet(b"\xff\x00")[0] == [] and decode_packet(b"{}")[1]


def test_queue_replaces_obsolete_updates_and_respects_budget_and_limit() -> None:
    queue = BroadcastQueue()
    queue.push(("member", "a"), b"old-a")
    queue.push(("member", "a"), b"new-a")
    queue.push(("member", "b"), b"b" * 50)
    assert len(queue) == 2
    # Budget for "new-a" only (5 bytes and its separator); the 50-byte update waits for a larger one.
    assert queue.take(budget=6, limit=3) == [b"new-a"]
    # Least sent first: the 50-byte update, then "new-a".
    assert queue.take(budget=100, limit=3) == [b"b" * 50, b"new-a"]
    assert queue.take(budget=100, limit=3) == [b"b" * 50, b"new-a"]
    assert len(queue) == 1                       # "new-a" reached 3 sends
    assert queue.take(budget=100, limit=3) == [b"b" * 50]
    assert len(queue) == 0 and queue.take(100, 3) == []


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=30), st.integers(10, 1400))
def test_queue_never_exceeds_the_budget(updates, budget: int) -> None:
    queue = BroadcastQueue()
    for index, update in enumerate(updates):
        queue.push(index, update)
    taken = queue.take(budget, limit=2)
    assert sum(len(u) + 1 for u in taken) <= budget
