"""Gossip between real sockets: four nodes on 127.0.0.2-5, each with its own UDP and TCP port."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from swarm_agent.net.gossip import Gossip, Keyring, Member

pytestmark = pytest.mark.integration

K1, K2, K3 = (bytes([n]) * 16 for n in (1, 2, 3))
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 6)]
# Waits are generous: they bound a hung test, they do not measure speed (bench/gossip_detect.py does).
PATIENCE = 30.0


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.05)


def states(node: Gossip) -> dict[str, str]:
    return {m.node_id: m.state for m in node.members()}


def values(node: Gossip, table: str) -> dict[str, dict]:
    return {key: entry.value for key, entry in node.entries(table).items()}


class Recorder:
    """What a consumer of one node was told."""

    def __init__(self, node: Gossip) -> None:
        self.members: list[Member] = []
        self.entries: dict[tuple[str, str], dict | None] = {}
        node.on_member(self.members.append)
        node.on_entry(lambda table, key, value: self.entries.__setitem__((table, key), value))

    def state_of(self, node_id: str) -> str | None:
        return next((m.state for m in reversed(self.members) if m.node_id == node_id), None)


@pytest.fixture
async def started() -> AsyncIterator[list[Gossip]]:
    nodes: list[Gossip] = []

    async def start(node_id: str, address: str, keyring: Keyring, port: int = 0) -> Gossip:
        node = Gossip(node_id, address, port, keyring=keyring)
        nodes.append(node)
        await node.start()
        return node

    yield start
    for node in nodes:
        await node.stop()


async def four_nodes(start) -> list[Gossip]:
    nodes = [await start(f"node-{i}", address, Keyring([K1])) for i, address in enumerate(ADDRESSES)]
    for node in nodes[1:]:
        assert await node.join([f"{nodes[0].address}:{nodes[0].port}"]) == 1
    await until(lambda: all(list(states(n).values()) == ["alive"] * 4 for n in nodes), "all four see four alive")
    return nodes


async def test_tables_converge_crashed_node_is_dropped_and_comes_back(started) -> None:
    nodes = await four_nodes(started)
    recorders = [Recorder(n) for n in nodes]
    for i, node in enumerate(nodes):
        node.put("endpoints", f"task-{i}", {"ip": f"10.0.{i}.2", "node": node.node_id})
        node.put("peers", node.node_id, {"vtep": node.address})
    nodes[0].delete("endpoints", "task-0")
    expected = {f"task-{i}": {"ip": f"10.0.{i}.2", "node": f"node-{i}"} for i in range(1, 4)}
    await until(lambda: all(values(n, "endpoints") == expected for n in nodes), "endpoint tables converge")
    await until(lambda: all(len(n.entries("peers")) == 4 for n in nodes), "peer tables converge")
    assert all(n.entries("endpoints")["task-2"].owner == "node-2" for n in nodes)

    crashed = nodes[3]
    old_incarnation = crashed.incarnation
    await crashed.stop()
    with pytest.raises(RuntimeError, match="already stopped"):
        await crashed.start()       # a restart is a new instance, with its state starting afresh
    survivors = nodes[:3]
    await until(lambda: all(states(n)["node-3"] == "dead" for n in survivors), "survivors declare node-3 dead")
    for node, recorder in zip(survivors, recorders):
        assert "task-3" not in node.entries("endpoints") and "node-3" not in node.entries("peers")
        assert recorder.state_of("node-3") == "dead"
        assert recorder.entries[("endpoints", "task-3")] is None and recorder.entries[("peers", "node-3")] is None
    assert all(len(n.entries("peers")) == 3 for n in survivors)

    # The same node restarted: a fresh process, the same address and port, its entries written anew.
    restarted = await started("node-3", crashed.address, Keyring([K1]), port=crashed.port)
    restarted.put("endpoints", "task-3", {"ip": "10.0.3.9", "node": "node-3"})
    restarted.put("peers", "node-3", {"vtep": restarted.address})
    assert await restarted.join([(nodes[1].address, nodes[1].port)]) == 1
    await until(lambda: all(states(n)["node-3"] == "alive" for n in survivors), "node-3 is alive again")
    assert all(m.incarnation > old_incarnation for n in survivors for m in n.members() if m.node_id == "node-3")
    everyone = survivors + [restarted]
    await until(lambda: all(values(n, "endpoints").get("task-3") == {"ip": "10.0.3.9", "node": "node-3"}
                            for n in everyone), "node-3's entries come back")
    await until(lambda: all(len(n.entries("peers")) == 4 for n in everyone), "peer tables complete again")
    assert all(values(n, "endpoints") == values(restarted, "endpoints") for n in survivors)
    assert all(recorder.state_of("node-3") == "alive" for recorder in recorders[:3])


async def test_restart_before_death_overrides_stale_entries(started) -> None:
    nodes = await four_nodes(started)
    nodes[3].put("endpoints", "task-3", {"ip": "10.0.3.2"})
    nodes[3].put("endpoints", "old-task", {"ip": "10.0.3.3"})
    await until(lambda: all(len(n.entries("endpoints")) == 2 for n in nodes), "entries spread")
    # Crash and come back at once, before anyone declares the node dead, without "old-task" any more.
    await nodes[3].stop()
    restarted = await started("node-3", nodes[3].address, Keyring([K1]), port=nodes[3].port)
    restarted.put("endpoints", "task-3", {"ip": "10.0.3.7"})
    assert await restarted.join([(nodes[0].address, nodes[0].port)]) == 1
    everyone = nodes[:3] + [restarted]
    await until(lambda: all(values(n, "endpoints") == {"task-3": {"ip": "10.0.3.7"}} for n in everyone),
                "the restarted node's entries replace its old ones everywhere")


async def test_leave_is_told_and_entries_are_dropped(started) -> None:
    nodes = await four_nodes(started)
    recorders = [Recorder(n) for n in nodes[:3]]
    nodes[3].put("endpoints", "task-3", {"ip": "10.0.3.2"})
    await until(lambda: all("task-3" in n.entries("endpoints") for n in nodes), "entry spreads")
    await nodes[3].leave()
    await until(lambda: all(states(n)["node-3"] == "left" for n in nodes[:3]), "the others see node-3 left")
    assert all("task-3" not in n.entries("endpoints") for n in nodes[:3])
    # Left, not dead: nobody went through suspicion first.
    assert all(recorder.state_of("node-3") == "left" for recorder in recorders)
    assert not any(m.state == "suspect" for recorder in recorders for m in recorder.members)


async def test_wrong_key_cannot_join_and_bad_datagrams_are_counted(started) -> None:
    nodes = await four_nodes(started)
    intruder = await started("intruder", "127.0.0.6", Keyring([K2]))
    assert await intruder.join([(nodes[0].address, nodes[0].port)]) == 0
    assert intruder.stats.push_pull_failures == 1
    assert nodes[0].stats.auth_failures >= 1
    assert [m.node_id for m in intruder.members()] == ["intruder"]

    # Datagrams under an unknown key, and garbage, straight at a member's UDP port.
    sealed_elsewhere = Keyring([K3]).encrypt(b'[{"t":"dead","node":"node-1","incarnation":9,"source":"x"}]')
    before = nodes[1].stats.auth_failures
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.6", 0))
        for datagram in (sealed_elsewhere, b"", b"\x01" + b"\x00" * 40, b"not gossip at all"):
            sock.sendto(datagram, (nodes[1].address, nodes[1].port))
        # Authentic but not gossip: counted as malformed, the rest of the datagram still read.
        sock.sendto(Keyring([K1]).encrypt(b'[{"t":"nonsense"}]'), (nodes[1].address, nodes[1].port))
    await until(lambda: nodes[1].stats.auth_failures >= before + 4 and nodes[1].stats.malformed >= 1,
                "bad datagrams counted")
    assert all(state == "alive" for state in states(nodes[1]).values())
    # The member still serves the cluster.
    nodes[1].put("t", "after", {"ok": True})
    await until(lambda: all("after" in n.entries("t") for n in nodes), "a write after the bad datagrams spreads")
    assert all("intruder" not in states(n) for n in nodes)


async def test_key_rotation_loses_no_message(started) -> None:
    nodes = await four_nodes(started)
    written: set[str] = set()

    async def write_between(step: int) -> None:
        for node in nodes:
            key = f"{node.node_id}-{step}"
            node.put("rotation", key, {"step": step})
            written.add(key)
            await asyncio.sleep(0.05)

    rings = [Keyring([K2, K1]),        # add the new key: everyone can read it, K1 still encrypts
             Keyring([K3, K2, K1]),    # switch: K2 encrypts, K3 arrives for the next rotation
             Keyring([K3, K2])]        # retire K1
    step = 0
    for ring in rings:
        # One node at a time, with traffic in between, as managers' assignments would arrive.
        for node in nodes:
            node.set_keyring(ring)
            step += 1
            await write_between(step)
        await until(lambda: all(set(n.entries("rotation")) == written for n in nodes),
                    f"writes made while rolling out {ring!r} arrive")
    assert all(n.stats.auth_failures == 0 for n in nodes), [n.stats for n in nodes]
    assert all(list(states(n).values()) == ["alive"] * 4 for n in nodes)
    # The old key is really gone: a message under K1 alone is refused now.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(Keyring([K1]).encrypt(b"[]"), (nodes[0].address, nodes[0].port))
    await until(lambda: nodes[0].stats.auth_failures == 1, "a message under the retired key is dropped")


async def test_member_declared_dead_by_mistake_refutes_and_its_entries_return(started) -> None:
    nodes = await four_nodes(started)
    nodes[2].put("endpoints", "task-2", {"ip": "10.0.2.2"})
    await until(lambda: all("task-2" in n.entries("endpoints") for n in nodes), "entry spreads")
    # A member (with the cluster's key) wrongly says node-2 is dead, to node-0 only; the news spreads.
    wrong = b'[{"t":"dead","node":"node-2","incarnation":0,"source":"node-1"}]'
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(Keyring([K1]).encrypt(wrong), (nodes[0].address, nodes[0].port))
    await until(lambda: nodes[2].incarnation > 0, "node-2 hears of its death and refutes")
    await until(lambda: all(states(n)["node-2"] == "alive" for n in nodes), "everyone sees node-2 alive again")
    await until(lambda: all(values(n, "endpoints") == {"task-2": {"ip": "10.0.2.2"}} for n in nodes),
                "node-2's entry is back everywhere")
    assert all(m.incarnation == nodes[2].incarnation for n in nodes for m in n.members() if m.node_id == "node-2")


@pytest.mark.parametrize("script, arguments, expected", [
    ("gossip_detect.py", ["--runs", "1", "--settle", "1"], "dead at every survivor: median"),
    ("gossip_spread.py", ["--members", "8", "--processes", "2", "--changes", "2", "--settle", "0.5"],
     "time until every member had a change: median"),
])
def test_gossip_benchmarks_run_on_a_tiny_cluster(script: str, arguments: list[str], expected: str) -> None:
    bench = Path(__file__).resolve().parents[3] / "bench"
    result = subprocess.run([sys.executable, str(bench / script), *arguments], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout, result.stdout
