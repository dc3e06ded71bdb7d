"""Log streams: the Engine's framing and details, query options, the broker's completion rule, log parsing."""

import asyncio
import struct

import pytest
from aiohttp.test_utils import make_mocked_request

from swarm_agent.api.errors import BadRequest
from swarm_agent.api.logs import details_of, frame, parse_options, render
from swarm_agent.api.models import (
    ContainerTemplate,
    LogContext,
    LogMessage,
    LogSelector,
    LogSubscriptionOptions,
    SubscriptionMessage,
    Task,
    TaskSpec,
)
from swarm_agent.manager import logbroker
from swarm_agent.manager.logbroker import Subscription
from swarm_agent.worker.logs import log_entries

STAMP = "2026-01-02T03:04:05.123456789Z"


def message(data: bytes = b"hello\n", stream: str = "stdout", task: str = "t1") -> LogMessage:
    return LogMessage(Context=LogContext(NodeID="n1", ServiceID="s1", TaskID=task), Timestamp=STAMP,
                      Stream=stream, Data=data)


def test_frames_and_details_as_the_engine_writes_them():
    assert frame(2, b"abc") == b"\x02\x00\x00\x00\x00\x00\x00\x03abc"
    assert struct.unpack(">BxxxL", frame(1, b"x" * 70000)[:8]) == (1, 70000)
    assert details_of(message()) == (b"com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,"
                                     b"com.docker.swarm.task.id=t1")
    assert render(message(), timestamps=False, details=False) == b"hello\n"
    assert render(message(), timestamps=True, details=True) == (
        STAMP.encode() + b" " + details_of(message()) + b" hello\n")


def test_log_messages_carry_any_bytes():
    odd = message(b"\xff\x00 not utf-8\n")
    assert LogMessage.model_validate_json(odd.model_dump_json()).Data == b"\xff\x00 not utf-8\n"


def options(query: str) -> LogSubscriptionOptions:
    return parse_options(make_mocked_request("GET", "/services/x/logs?" + query))


def test_query_options():
    got = options("stdout=1&stderr=true&follow=1&tail=5&since=1700000000.500000000")
    assert got.Streams == ["stdout", "stderr"] and got.Follow and got.Tail == 5 and got.Since == 1700000000.5
    got = options("stdout=1&tail=all&since=0")
    assert got.Streams == ["stdout"] and got.Tail is None and got.Since is None and not got.Follow
    assert options("stderr=1&tail=0").Tail == 0


@pytest.mark.parametrize("query, words", [
    ("", "you must choose at least one stream"),
    ("stdout=1&tail=x", "tail: 'x'"),
    ("stdout=1&tail=-1", "negative tail"),
    ("stdout=1&since=yesterday", "since: 'yesterday'"),
    ("stdout=maybe", "stdout"),
])
def test_bad_query_options_are_named(query, words):
    with pytest.raises(BadRequest, match=words):
        options(query)


def subscription(follow: bool = False, nodes: tuple[str, ...] = ("n1", "n2")) -> SubscriptionMessage:
    return SubscriptionMessage(ID="sub", Selector=LogSelector(ServiceIDs=["s1"], TaskIDs=["t9"]),
                               Options=LogSubscriptionOptions(Follow=follow), Manager="m:2377",
                               Nodes=[] if follow else list(nodes))


def task(task_id: str, service: str) -> Task:
    return Task(ID=task_id, ServiceID=service, Spec=TaskSpec(ContainerSpec=ContainerTemplate(Image="i")))


def test_which_nodes_a_subscription_concerns():
    assert subscription().concerns("n1", []) and not subscription().concerns("n3", [task("t1", "s1")])
    followed = subscription(follow=True)
    assert followed.concerns("n3", [task("t1", "s1")]) and followed.concerns("n3", [task("t9", "other")])
    assert not followed.concerns("n3", [task("t2", "other")])


async def collect(sub: Subscription, gone=lambda: False) -> list[bytes]:
    return [m.Data for batch in [b async for b in sub.batches(gone)] for m in batch]


def test_a_stream_ends_when_every_node_closed():
    async def scenario() -> list[bytes]:
        sub = Subscription(subscription(), [])
        sub.deliver("n1", [message(b"a\n")], close=False)
        sub.deliver("n2", [message(b"b\n")], close=True)
        sub.deliver("n1", [message(b"c\n")], close=True)
        data = await collect(sub)
        assert sub.incomplete() is None
        return data

    assert asyncio.run(scenario()) == [b"a\n", b"b\n", b"c\n"]


def test_a_quiet_node_is_given_up_with_a_warning(monkeypatch):
    monkeypatch.setattr(logbroker, "IDLE_TIMEOUT", 0.05)
    monkeypatch.setattr(logbroker, "CLIENT_CHECK", 0.01)

    async def scenario() -> Subscription:
        sub = Subscription(subscription(), ["node n3 is not available"])
        sub.deliver("n1", [message()], close=True)
        assert await collect(sub) == [b"hello\n"]
        return sub

    sub = asyncio.run(scenario())
    assert sub.incomplete() == ("warning: incomplete log stream. some logs could not be retrieved for the following "
                                "reasons: node n3 is not available, node n2 did not answer within 0s")


def test_a_followed_stream_ends_when_the_client_goes(monkeypatch):
    monkeypatch.setattr(logbroker, "CLIENT_CHECK", 0.01)
    gone = {"yes": False}

    async def scenario() -> list[bytes]:
        sub = Subscription(subscription(follow=True), [])
        sub.deliver("n1", [message()], close=True)  # a Close ends nothing while following
        asyncio.get_running_loop().call_later(0.05, gone.update, {"yes": True})
        return await collect(sub, lambda: gone["yes"])

    assert asyncio.run(scenario()) == [b"hello\n"]


def test_log_entries_without_and_with_a_tty():
    frames = [f"{STAMP} one\n".encode(), f"{STAMP} two".encode()]
    assert list(log_entries(frames, tty=False)) == [(STAMP, b"one\n"), (STAMP, b"two")]
    raw = f"{STAMP} one\r\n{STAMP} two\r\n{STAMP} par".encode()
    chunks = [raw[i:i + 1] for i in range(len(raw))]  # the SDK reads a TTY's log byte by byte
    assert list(log_entries(chunks, tty=True)) == [(STAMP, b"one\r\n"), (STAMP, b"two\r\n"), (STAMP, b"par")]
