#!/usr/bin/env python3
"""How long a table change takes to reach every member of a large gossip cluster (issue 4's goal: p99 under
2 s with 100 members).

Starts --members gossip nodes with the default configuration on 127.0.0.2, .3, ... (random ports), spread
over --processes processes (a process per node would not fit on a small machine), all joined through the
first. Once every node sees every other alive, one node of the first process writes a table entry every
--every seconds, --changes times; each node reports when its entry callback sees the change.

Prints the median and p99, over all changes, of the time until the last member had it and of the per-member
delivery delay; suspicions of live members seen after the cluster formed; the CPU all members used meanwhile.

Run from the repository root: ``.venv/bin/python bench/gossip_spread.py [--members 100] [--processes 4]
[--changes 30] [--every 1.0]``.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "src"))

from swarm_agent.net.gossip import Gossip, Keyring  # noqa: E402

KEY = bytes(range(16))


def emit(**event) -> None:
    print(json.dumps({"at": time.time(), **event}), flush=True)


async def child(first: int, count: int, total: int, seed: str | None, changes: int, every: float) -> None:
    nodes = [Gossip(f"node-{i}", f"127.0.0.{i + 2}", 0, keyring=Keyring([KEY])) for i in range(first, first + count)]
    for node in nodes:
        node.on_entry(lambda table, key, value, node=node: emit(event="entry", node=node.node_id, key=key))
        node.on_member(lambda member, node=node: emit(event="member", node=node.node_id, member=member.node_id,
                                                      state=member.state))
        await node.start()
    seed = seed or f"{nodes[0].address}:{nodes[0].port}"
    for node in nodes:
        if node.node_id != "node-0":
            await node.join([seed])
    emit(event="ready", seed=seed)
    parent = os.getppid()
    while not all(sum(m.state == "alive" for m in n.members()) == total for n in nodes):
        if os.getppid() != parent:      # the benchmark itself gone: stop too
            return
        await asyncio.sleep(0.2)
    emit(event="formed")
    # The first process writes once the parent says every process sees the whole cluster.
    if first == 0:
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                           sys.stdin)
        await reader.readline()
        for change in range(changes):
            writer = random.choice(nodes)
            emit(event="write", node=writer.node_id, key=f"change-{change}")
            writer.put("endpoints", f"change-{change}", {"n": change})
            await asyncio.sleep(every)
        emit(event="done")
    while os.getppid() == parent:
        await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> None:
    per = -(-args.members // args.processes)
    processes = []
    events: list[dict] = []
    seed = None
    readers = []

    async def read(process) -> None:
        async for line in process.stdout:
            events.append(json.loads(line))

    try:
        for first in range(0, args.members, per):
            command = [sys.executable, __file__, "--child", str(first), str(min(per, args.members - first)),
                       str(args.members), "--changes", str(args.changes), "--every", str(args.every)]
            if seed:
                command += ["--seed", seed]
            process = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                           stdout=asyncio.subprocess.PIPE)
            processes.append(process)
            while (event := json.loads(await process.stdout.readline()))["event"] != "ready":
                events.append(event)
            seed = event["seed"]
            readers.append(asyncio.create_task(read(process)))
        started = time.monotonic()
        while sum(e["event"] == "formed" for e in events) < len(processes):
            if time.monotonic() - started > 120:
                raise RuntimeError("the cluster did not form within 120 s")
            await asyncio.sleep(0.1)
        print(f"{args.members} members formed in {time.monotonic() - started:.1f} s after the last start",
              flush=True)
        formed_at = time.time()
        cpu_before = sum(_cpu_seconds(p.pid) for p in processes)
        await asyncio.sleep(args.settle)
        processes[0].stdin.write(b"go\n")
        await processes[0].stdin.drain()
        while not any(e["event"] == "done" for e in events):
            await asyncio.sleep(0.1)
        await asyncio.sleep(5)      # stragglers
        cpu = sum(_cpu_seconds(p.pid) for p in processes) - cpu_before
        elapsed = time.time() - formed_at
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            await process.wait()
        for reader in readers:
            reader.cancel()

    writes = {e["key"]: e for e in events if e["event"] == "write"}
    last, delays, incomplete = [], [], 0
    for key, write in writes.items():
        seen = {e["node"]: e["at"] for e in events if e["event"] == "entry" and e["key"] == key
                and e["node"] != write["node"]}
        delays += [at - write["at"] for at in seen.values()]
        if len(seen) < args.members - 1:
            incomplete += 1
            continue
        last.append(max(seen.values()) - write["at"])
    last.sort()
    delays.sort()

    def p(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    print(f"{len(writes)} changes, one every {args.every:g} s, {args.members} members in {len(processes)} processes")
    if last:
        print(f"time until every member had a change: median {statistics.median(last):.2f} s, "
              f"p99 {p(last, 0.99):.2f} s, max {last[-1]:.2f} s")
        print(f"per-member delivery delay: median {statistics.median(delays):.3f} s, p99 {p(delays, 0.99):.3f} s")
    print(f"changes that some member never saw (within 5 s of the last write): {incomplete}")
    false = sum(1 for e in events if e["event"] == "member" and e["at"] >= formed_at and e["state"] != "alive")
    print(f"suspicions or deaths of (live) members after forming: {false}")
    print(f"CPU of all members after forming: {cpu / elapsed:.0%} of a core ({cpu / elapsed / args.members:.2%} "
          f"per member)")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between changes")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between forming and the first change")
    parser.add_argument("--child", nargs=3, type=int, metavar=("FIRST", "COUNT", "TOTAL"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        asyncio.run(child(*arguments.child, arguments.seed, arguments.changes, arguments.every))
    else:
        asyncio.run(main(arguments))
