#!/usr/bin/env python3
"""Scale run: real managers, many hollow nodes, services adding up to many tasks, then some nodes die.

Lab hosts run ``--managers`` real ``swarmd`` managers (drained, so they run no tasks themselves); another lab
host runs ``swarmd-hollow`` processes with ``--nodes`` simulated workers in all that join the first manager
over real TLS. Then ``--services`` services adding up to ``--tasks`` replicas are created through the first
manager's Docker API, and the script prints:
- time until every task is assigned to a node and until every task runs, and tasks scheduled per second;
- the first manager's CPU (share of one core) and RSS at rest afterwards, and those of its etcd;
- API latency p50/p99 of ``service create`` and of ``GET /tasks?filters={"service":...}`` under that load
  (a probe creates a 0-replica service and lists one service's tasks every ``--probe-interval`` seconds while
  the tasks converge; the creates of the load itself count as service creates too);
- with ``--kill K``: K of the nodes run in a process of their own, which is killed once everything runs;
  the time until the managers show those K nodes down, and until every task runs again on the others.

Run as root from the repository root:
``.venv/bin/python bench/scale.py [--managers 1] [--nodes 100] [--tasks 1000] [--services 10]
[--start-delay 0.5s] [--kill 0]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
from docker.types import ContainerSpec, ServiceMode, TaskTemplate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "tests"))

from harness.cluster import SwarmNode, wait_for  # noqa: E402
from harness.hollow import ready_nodes, start_hollow  # noqa: E402
from harness.hosts import Lab  # noqa: E402
from harness.image import busybox_image  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def program(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def at_rest(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float]]:
    """name -> (CPU as % of one core over ``seconds``, RSS MiB at the end)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (100 * (cpu_seconds(pid) - before[name]) / seconds, rss_mib(pid)) for name, pid in pids.items()}


# ------------------------------------------------------------------------ API


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def latency(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    return (f"p50 {percentile(samples, 0.5) * 1000:.0f} ms, p99 {percentile(samples, 0.99) * 1000:.0f} ms "
            f"({len(samples)} calls)")


def create_service(api: docker.APIClient, name: str, image: str, replicas: int) -> float:
    template = TaskTemplate(ContainerSpec(image, command=["sleep", "3600"]))
    start = time.perf_counter()
    api.create_service(template, name=name, mode=ServiceMode("replicated", replicas=replicas))
    return time.perf_counter() - start


def list_tasks(api: docker.APIClient, service: str) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    tasks = api.tasks(filters={"service": service})
    return time.perf_counter() - start, tasks


class Probe(threading.Thread):
    """Service creates and per-service task lists at a steady pace, timed, while the cluster converges."""

    def __init__(self, socket: Path, image: str, services: list[str], interval: float) -> None:
        super().__init__(name="api-probe", daemon=True)
        self.api = docker.APIClient(base_url=f"unix://{socket}", version="1.41", timeout=60)
        self.image, self.services, self.interval = image, services, interval
        self.creates: list[float] = []
        self.lists: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(1)
        n = 0
        try:
            while not self.stop.wait(self.interval):
                n += 1
                self.creates.append(create_service(self.api, f"probe-{n}", self.image, 0))
                self.lists.append(list_tasks(self.api, rng.choice(self.services))[0])
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.api.close()


# ------------------------------------------------------------------------ run


def assigned(api: docker.APIClient) -> int:
    """Tasks meant to run that are assigned to a node: a list of every task, which at 100,000 tasks is itself
    a load on the manager, so it is asked for only every ``assign_interval`` (see main)."""
    return sum(1 for t in api.tasks(filters={"desired-state": "running"}) if t.get("NodeID"))


def running(api: docker.APIClient) -> int:
    """Tasks of the load's services running on ready nodes, as ``docker service ls`` counts them."""
    return sum(s["ServiceStatus"]["RunningTasks"] for s in api.services(filters={"name": "load-"}, status=True))


def down_nodes(api: docker.APIClient, ids: frozenset[str]) -> int:
    return sum(1 for n in api.nodes() if n["ID"] in ids and n["Status"]["State"] == "down")


def nodes_named(api: docker.APIClient, prefix: str) -> frozenset[str]:
    return frozenset(n["ID"] for n in api.nodes() if n["Description"]["Hostname"].startswith(prefix))


def kill_and_recover(api: docker.APIClient, doomed: subprocess.Popen, ids: frozenset[str], tasks: int,
                     args: argparse.Namespace) -> None:
    """Kill the doomed fleet; time until the managers see its nodes down and every task runs elsewhere."""
    doomed.kill()
    doomed.wait()
    start = time.monotonic()
    deadline = start + args.timeout
    down_at = running_at = None
    while running_at is None or down_at is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"after killing {len(ids)} nodes: {down_nodes(api, ids)} down and "
                             f"{running(api)} tasks running on ready nodes within {args.timeout:.0f} s")
        now = time.monotonic()
        if down_at is None and down_nodes(api, ids) == len(ids):
            down_at = now - start
        # Until the dead nodes show down, their tasks still count as running.
        if down_at is not None and running_at is None and running(api) >= tasks:
            running_at = now - start
        time.sleep(args.poll_interval)
    print(f"{len(ids)} hollow nodes killed:")
    print(f"  all shown down after {down_at:.1f} s")
    print(f"  all {tasks} tasks running on the other nodes after {running_at:.1f} s")


def scale_run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="sws-", dir="/tmp"))
    lab = Lab(base)
    try:
        image, archive = busybox_image(Path("/var/tmp/swarm-test-cache"))
        managers = [SwarmNode(h) for h in lab.add_hosts(*(f"m{i + 1}" for i in range(args.managers)))]
        fleet_host = lab.add_host("hollow", engine=False)
        manager = managers[0]
        for node in managers:
            node.host.load_image(archive)
            node.start()
        manager.init()
        for node in managers[1:]:
            node.join(manager, role="manager")
        for node in managers:
            manager.docker("node", "update", "--availability", "drain", node.node_id)

        start = time.monotonic()
        fleet = start_hollow(fleet_host, manager, args.nodes - args.kill, start_delay=args.start_delay,
                             failure_rate=0.0, join_concurrency=args.join_concurrency)
        # The nodes to kill run in a process of their own, under names of their own.
        doomed = (start_hollow(fleet_host, manager, args.kill, start_delay=args.start_delay, failure_rate=0.0,
                               join_concurrency=args.join_concurrency, name_prefix="doomed", seed=2,
                               log_name="doomed")
                  if args.kill else None)
        wait_for(f"{args.nodes} hollow nodes ready",
                 lambda: fleet.poll() is None and ready_nodes(manager) == args.nodes + args.managers,
                 timeout=max(60.0, args.nodes * 0.5), interval=1.0)
        print(f"{args.nodes} hollow nodes joined and ready in {time.monotonic() - start:.1f} s", flush=True)

        api = docker.APIClient(base_url=f"unix://{manager.socket}", version="1.41", timeout=120)
        names = [f"load-{i}" for i in range(args.services)]
        per = [args.tasks // args.services + (1 if i < args.tasks % args.services else 0)
               for i in range(args.services)]
        probe = Probe(manager.socket, image, names, args.probe_interval)
        creates: list[float] = []
        start = time.monotonic()
        for name, replicas in zip(names, per):
            creates.append(create_service(api, name, image, replicas))
        probe.start()
        assigned_at = running_at = None
        deadline = start + args.timeout
        next_assign_poll = start
        while running_at is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"not all {args.tasks} tasks ran within {args.timeout:.0f} s: "
                                 f"{running(api)} running")
            if fleet.poll() is not None:
                raise SystemExit(f"the hollow fleet exited:\n{fleet_host.logs('hollow')[-3000:]}")
            if assigned_at is None and time.monotonic() >= next_assign_poll:
                next_assign_poll = time.monotonic() + args.assign_interval
                if assigned(api) >= args.tasks:
                    assigned_at = time.monotonic() - start
            if running(api) >= args.tasks:
                running_at = time.monotonic() - start
            time.sleep(args.poll_interval)
        probe.stop.set()
        probe.join(timeout=120)
        if probe.error is not None:
            raise SystemExit(f"API probe failed: {probe.error!r}")
        if assigned_at is None and assigned(api) >= args.tasks:
            assigned_at = time.monotonic() - start
        assert assigned_at is not None
        print(f"{args.tasks} tasks in {args.services} services on {args.nodes} hollow nodes "
              f"(start delay {args.start_delay}):")
        print(f"  all assigned after {assigned_at:.1f} s ({args.tasks / assigned_at:,.0f} tasks scheduled/s; "
              f"asked every {args.assign_interval:.1f} s)")
        print(f"  all running after {running_at:.1f} s ({args.tasks / running_at:,.0f} tasks running/s)")
        print(f"  service create: {latency(creates + probe.creates)}")
        print(f"  GET /tasks?filters=service: {latency(probe.lists)}")

        assert manager.proc is not None
        pids = {"manager (swarmd)": manager.proc.pid}
        etcd = [c for c in children(manager.proc.pid) if os.path.basename(program(c)) == "etcd"]
        if etcd:
            pids["manager's etcd"] = etcd[0]
        pids["hollow fleet"] = fleet.pid
        time.sleep(args.settle)
        for name, (cpu, rss) in at_rest(pids, args.rest_seconds).items():
            print(f"  at rest ({args.rest_seconds:.0f} s, after {args.settle:.0f} s settling): {name}: "
                  f"CPU {cpu:.1f} % of a core, RSS {rss:.0f} MiB")
        if doomed is not None:
            kill_and_recover(api, doomed, nodes_named(api, "doomed"), args.tasks, args)
        api.close()
    finally:
        lab.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--managers", type=int, default=1, help="real managers (drained)")
    parser.add_argument("--nodes", type=int, default=100, help="hollow nodes")
    parser.add_argument("--kill", type=int, default=0, help="hollow nodes (of --nodes) to kill once all runs")
    parser.add_argument("--tasks", type=int, default=1000, help="replicas over all services")
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--start-delay", default="0.5s", help="hollow nodes' task start delay")
    parser.add_argument("--join-concurrency", type=int, default=16)
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between running counts")
    parser.add_argument("--assign-interval", type=float,
                        help="seconds between lists of every task (default: 0.5 per 10,000 tasks, at least 0.5)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--settle", type=float, default=5, help="seconds between convergence and the rest sample")
    parser.add_argument("--rest-seconds", type=float, default=10)
    args = parser.parse_args()
    if args.nodes < 1 or args.services < 1 or args.tasks < args.services or args.managers < 1:
        parser.error("need at least one manager, node and service, and at least one task per service")
    if not 0 <= args.kill < args.nodes:
        parser.error("--kill must leave at least one node alive")
    if args.assign_interval is None:
        args.assign_interval = max(args.poll_interval, 0.5 * args.tasks / 10_000)
    scale_run(args)


if __name__ == "__main__":
    main()
