#!/usr/bin/env python3
"""Cluster-core timings on lab hosts: one manager and three workers, each with its own Docker engine.

Prints, for this project's agent:
- create: ``docker service create --replicas 30`` until all 30 tasks run;
- failover: a worker killed outright (agent and engine) until all 30 tasks run on the others.

Run as root from the repository root: ``.venv/bin/python bench/core_timings.py [--replicas N] [--runs K]``.
"""

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "tests"))

from harness.cluster import SwarmNode, start_cluster, wait_for  # noqa: E402
from harness.hosts import Lab  # noqa: E402
from harness.image import busybox_image  # noqa: E402

WEB = ["httpd", "-f", "-p", "80", "-h", "/"]


def running_per_node(manager: SwarmNode, service: str) -> dict[str, int]:
    out = manager.docker(
        "service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}"
    ).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        node, state = line.split(maxsplit=1)
        if state.startswith("Running"):
            counts[node] = counts.get(node, 0) + 1
    return counts


def one_run(replicas: int) -> tuple[float, float]:
    lab = Lab(Path(tempfile.mkdtemp(prefix="swb-", dir="/tmp")))
    try:
        image, archive = busybox_image(Path("/var/tmp/swarm-test-cache"))
        hosts = lab.add_hosts("m1", "w1", "w2", "w3")
        manager, *workers = start_cluster(hosts, archive, drain_manager=True)

        start = time.monotonic()
        manager.docker("service", "create", "--detach", "--name", "bench", "--replicas", str(replicas), image, *WEB)
        wait_for("all running", lambda: sum(running_per_node(manager, "bench").values()) == replicas,
                 timeout=300, interval=0.1)
        create = time.monotonic() - start

        victim = workers[0]
        start = time.monotonic()
        victim.kill()
        victim.host.stop_engine(signal.SIGKILL)
        wait_for("recovered", lambda: (c := running_per_node(manager, "bench")) and victim.name not in c
                 and sum(c.values()) == replicas, timeout=300, interval=0.1)
        failover = time.monotonic() - start
        return create, failover
    finally:
        lab.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    creates, failovers = [], []
    for run in range(args.runs):
        create, failover = one_run(args.replicas)
        creates.append(create)
        failovers.append(failover)
        print(f"run {run + 1}: create {args.replicas} replicas {create:.1f} s, killed worker recovered {failover:.1f} s",
              flush=True)
    print(f"create {args.replicas} replicas until all running: median {statistics.median(creates):.1f} s")
    print(f"killed worker until all {args.replicas} run elsewhere: median {statistics.median(failovers):.1f} s")


if __name__ == "__main__":
    main()
