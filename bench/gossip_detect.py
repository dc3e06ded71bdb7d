#!/usr/bin/env python3
"""How fast gossip declares a crashed member dead, and whether a healthy cluster stays quiet.

Each run starts a cluster of gossip nodes with the default configuration, one process per node on
127.0.0.2, .3, ... (random ports), each writing table entries at a steady rate (endpoint churn). Once all see
each other alive, the cluster runs healthy for --settle seconds; then one node (not the seed) is killed with
SIGKILL, and the time from the kill until each survivor reports it dead is taken from the survivors' own
member callbacks.

Prints, over all runs: the time until all survivors declared the dead node dead (median, max), the time until
the first did, and the false suspicions seen (a live node suspected, at any moment of the run).

Run from the repository root: ``.venv/bin/python bench/gossip_detect.py [--runs 10] [--nodes 4] [--settle 10]
[--writes 10]``.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "src"))

from swarm_agent.net.gossip import Gossip, Keyring  # noqa: E402

KEY = bytes(range(16))


def emit(**event) -> None:
    print(json.dumps({"at": time.time(), **event}), flush=True)


async def child(node_id: str, address: str, join: str | None, writes: float) -> None:
    node = Gossip(node_id, address, 0, keyring=Keyring([KEY]))
    node.on_member(lambda m: emit(event="member", node=m.node_id, state=m.state))
    await node.start()
    if join:
        await node.join([join])
    emit(event="ready", port=node.port)
    sequence = 0
    parent = os.getppid()
    while os.getppid() == parent:      # the benchmark itself gone: stop too
        await asyncio.sleep(1 / writes)
        sequence += 1
        # Endpoint churn: a handful of keys rewritten over and over.
        node.put("endpoints", f"{node_id}-{sequence % 20}", {"ip": f"10.0.0.{sequence % 250}", "seq": sequence})


class Cluster:
    def __init__(self, nodes: int, writes: float) -> None:
        self.size = nodes
        self.writes = writes
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.events: list[tuple[str, dict]] = []      # (observer, event)
        self._readers: list[asyncio.Task] = []

    async def start(self) -> None:
        seed = None
        for i in range(self.size):
            node_id = f"node-{i}"
            args = [sys.executable, __file__, "--child", node_id, f"127.0.0.{i + 2}", "--writes", str(self.writes)]
            if seed:
                args += ["--join", seed]
            process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
            self.processes[node_id] = process
            while (ready := json.loads(await process.stdout.readline()))["event"] != "ready":
                self.events.append((node_id, ready))
            if seed is None:
                seed = f"127.0.0.2:{ready['port']}"
            self._readers.append(asyncio.create_task(self._read(node_id, process)))

    async def _read(self, observer: str, process: asyncio.subprocess.Process) -> None:
        async for line in process.stdout:
            self.events.append((observer, json.loads(line)))

    def view(self, observer: str) -> dict[str, str]:
        seen: dict[str, str] = {}
        for who, event in self.events:
            if who == observer and event["event"] == "member":
                seen[event["node"]] = event["state"]
        return seen

    async def wait(self, condition, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def kill(self, node_id: str) -> float:
        self.processes[node_id].send_signal(signal.SIGKILL)
        return time.time()

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
        for process in self.processes.values():
            await process.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def one_run(args: argparse.Namespace) -> dict:
    cluster = Cluster(args.nodes, args.writes)
    try:
        await cluster.start()
        names = list(cluster.processes)
        formed = await cluster.wait(lambda: all(
            sum(1 for n, s in cluster.view(o).items() if s == "alive" and n != o) == args.nodes - 1
            for o in names), 30)
        if not formed:
            raise RuntimeError("the cluster did not form within 30 s")
        await asyncio.sleep(args.settle)
        victim = random.choice(names[1:])
        survivors = [n for n in names if n != victim]
        killed_at = cluster.kill(victim)

        def dead_times() -> dict[str, float]:
            return {o: e["at"] for o, e in cluster.events
                    if o in survivors and e["event"] == "member" and e["node"] == victim and e["state"] == "dead"}

        await cluster.wait(lambda: len(dead_times()) == len(survivors), 30)
        # A little longer, to catch suspicions of live nodes that the death might have set off.
        await asyncio.sleep(2)
        times = dead_times()
        false = sum(1 for o, e in cluster.events if e["event"] == "member" and e["state"] in ("suspect", "dead")
                    and e["node"] != victim)
        return {"all": max(times.values()) - killed_at if len(times) == len(survivors) else None,
                "first": min(times.values()) - killed_at if times else None, "false_suspicions": false}
    finally:
        await cluster.stop()


async def main(args: argparse.Namespace) -> None:
    results = []
    for run in range(args.runs):
        result = await one_run(args)
        results.append(result)
        print(f"run {run + 1}: all survivors declared it dead after "
              f"{'never' if result['all'] is None else format(result['all'], '.2f') + ' s'}, first after "
              f"{'never' if result['first'] is None else format(result['first'], '.2f') + ' s'}, "
              f"false suspicions {result['false_suspicions']}", flush=True)
    detected = [r["all"] for r in results if r["all"] is not None]
    firsts = [r["first"] for r in results if r["first"] is not None]
    print(f"\n{args.nodes} nodes, {args.runs} runs, {args.settle:.0f} s healthy each, "
          f"{args.writes:g} writes/s per node")
    if detected:
        print(f"dead at every survivor: median {statistics.median(detected):.2f} s, max {max(detected):.2f} s "
              f"({len(detected)} of {len(results)} runs detected)")
        print(f"dead at the first survivor: median {statistics.median(firsts):.2f} s, max {max(firsts):.2f} s")
    print(f"false suspicions (live nodes suspected or declared dead): {sum(r['false_suspicions'] for r in results)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of healthy running before the kill")
    parser.add_argument("--writes", type=float, default=10.0, help="table writes per second per node")
    parser.add_argument("--child", nargs=2, metavar=("NODE_ID", "ADDRESS"), help=argparse.SUPPRESS)
    parser.add_argument("--join", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        asyncio.run(child(*arguments.child, arguments.join, arguments.writes))
    else:
        asyncio.run(main(arguments))
