#!/usr/bin/env python3
"""Scheduler and orchestrator microbenchmark: pure calls, no etcd, no network.

Prints:
- placement: ``scheduler.schedule`` placing ``--tasks`` pending tasks on ``--nodes`` nodes that already carry
  two running tasks each; the services mix constraints (a zone, ``node.role``, a node label) with spread
  preferences (over zones, over racks) and plain spread; decisions per second, median of ``--runs``;
- reconcile: ``orchestrator.reconcile`` at ``--tasks`` and ten times as many tasks (10k and 100k by default),
  once creating every task (services just created) and once at rest (every task running, empty plan).

Run from the repository root: ``.venv/bin/python bench/scheduler_bench.py [--nodes 2500] [--tasks 10000]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent" / "src"))
sys.path.insert(0, str(ROOT / "agent" / "tests" / "unit"))

from cluster_sim import T0, Ids, make_node, make_service, make_spec, make_task  # noqa: E402
from swarm_agent.api.models import Node, Service, Task, TaskState  # noqa: E402
from swarm_agent.manager.orchestrator import reconcile  # noqa: E402
from swarm_agent.manager.scheduler import schedule  # noqa: E402

ZONES = ("z1", "z2", "z3")
RACKS_PER_ZONE = 20
SERVICES = 20
HISTORY_LIMIT = 5


def make_nodes(count: int) -> list[Node]:
    nodes = []
    for i in range(count):
        zone = ZONES[i % len(ZONES)]
        labels = {"zone": zone, "rack": f"{zone}-r{(i // len(ZONES)) % RACKS_PER_ZONE}",
                  "disk": "ssd" if i % 4 else "hdd"}
        nodes.append(make_node(f"n{i:05d}", labels=labels, cpus=8, memory=16 << 30))
    return nodes


def make_services(count: int) -> list[Service]:
    """Four kinds of placement, in turn: constrained and spread, constrained, spread, plain."""
    kinds = [
        lambda i: make_spec(constraints=[f"node.labels.zone=={ZONES[i % 3]}", "node.role==worker"],
                            spread=["node.labels.rack"], cpus=0.1),
        lambda i: make_spec(constraints=["node.labels.disk==ssd", "node.platform.os==linux"], cpus=0.1),
        lambda i: make_spec(spread=["node.labels.zone", "node.labels.rack"]),
        lambda i: make_spec(),
    ]
    return [make_service(f"s{i:03d}", replicas=0, spec=kinds[i % len(kinds)](i)) for i in range(count)]


def with_replicas(services: list[Service], total: int) -> list[Service]:
    """Copies of ``services`` whose replica counts add up to ``total``."""
    out = []
    for i, service in enumerate(services):
        copy = service.model_copy(deep=True)
        copy.Spec.Mode.Replicated.Replicas = total // len(services) + (1 if i < total % len(services) else 0)
        out.append(copy)
    return out


def running_tasks(services: list[Service], nodes: list[Node], per_service: dict[str, int]) -> list[Task]:
    tasks, ids, n = [], Ids("r"), 0
    for service in services:
        for slot in range(1, per_service[service.ID] + 1):
            tasks.append(make_task(ids(), service, slot=slot, node=nodes[n % len(nodes)].ID))
            n += 1
    return tasks


def pending_tasks(services: list[Service], count: int) -> list[Task]:
    ids = Ids("p")
    return [make_task(ids(), services[i % len(services)], slot=10_000 + i, state=TaskState.NEW)
            for i in range(count)]


def bench_placement(nodes: list[Node], tasks: int, runs: int) -> None:
    services = make_services(SERVICES)
    by_id = {s.ID: s for s in services}
    existing = running_tasks(services, nodes, {s.ID: 2 * len(nodes) // len(services) for s in services})
    pending = pending_tasks(services, tasks)
    everything = existing + pending
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        decisions = schedule(pending, nodes, everything, by_id)
        times.append(time.perf_counter() - start)
    placed = sum(1 for d in decisions if d.node_id is not None)
    if placed != len(pending):
        unplaced = next(d for d in decisions if d.node_id is None)
        raise SystemExit(f"only {placed} of {len(pending)} tasks placed; first refusal: {unplaced.reason}")
    median = statistics.median(times)
    print(f"placement: {len(pending)} pending tasks, {len(nodes)} nodes, {len(existing)} running tasks, "
          f"{SERVICES} services (constraints + spread): median {median * 1000:.1f} ms per batch, "
          f"{len(pending) / median:,.0f} decisions/s (best {len(pending) / min(times):,.0f}/s, {runs} runs)")


def bench_reconcile(nodes: list[Node], total: int, runs: int) -> None:
    services = with_replicas(make_services(SERVICES), total)

    def timed(tasks: list[Task]) -> tuple[float, int]:
        times, changes = [], 0
        for _ in range(runs):
            start = time.perf_counter()
            plan = reconcile(services, tasks, nodes, history_limit=HISTORY_LIMIT, now=T0, new_id=Ids("c"))
            times.append(time.perf_counter() - start)
            changes = len(plan.create) + len(plan.update) + len(plan.delete)
        return statistics.median(times), changes

    create_time, created = timed([])
    at_rest = running_tasks(services, nodes, {s.ID: s.Spec.Mode.Replicated.Replicas for s in services})
    rest_time, changed = timed(at_rest)
    if created != total or changed != 0:
        raise SystemExit(f"reconcile of {total} tasks: created {created}, changed {changed} at rest")
    print(f"reconcile: {total} tasks in {SERVICES} services on {len(nodes)} nodes: "
          f"create all {create_time * 1000:.0f} ms, at rest {rest_time * 1000:.0f} ms (median of {runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2500)
    parser.add_argument("--tasks", type=int, default=10_000, help="pending tasks per placement batch; reconcile "
                        "runs at this many tasks and at ten times as many")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.nodes < 1 or args.tasks < SERVICES or args.runs < 1:
        parser.error(f"need at least 1 node, {SERVICES} tasks and 1 run")
    nodes = make_nodes(args.nodes)
    bench_placement(nodes, args.tasks, args.runs)
    for total in (args.tasks, 10 * args.tasks):
        bench_reconcile(nodes, total, max(1, args.runs // 2) if total > args.tasks else args.runs)


if __name__ == "__main__":
    main()
