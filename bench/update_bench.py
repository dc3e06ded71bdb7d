#!/usr/bin/env python3
"""Rolling-update timing on lab hosts: one manager (drained) and three workers, each with its own Docker engine.

A busybox web service of 30 replicas is updated to another image tag with parallelism 5, delay 0 and
monitor 5 s (Swarm's settings for its figure in SWARM-FEATURES.md); printed: seconds from
``docker service update --detach --image`` until every task runs the new image, and until the update
status reads ``completed`` (which also waits for the monitor of the last batch).

Run as root from the repository root: ``.venv/bin/python bench/update_bench.py [--replicas N] [--runs K]``.
"""

import argparse
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
NEW_IMAGE = "local/busybox:2"


def new_and_running(manager: SwarmNode, service: str, image: str = NEW_IMAGE) -> int:
    out = manager.docker("service", "ps", service, "--filter", "desired-state=running",
                         "--format", "{{.Image}} {{.CurrentState}}").stdout
    return sum(1 for line in out.splitlines() if line.startswith(f"{image} Running"))


def one_run(replicas: int, parallelism: int) -> tuple[float, float]:
    lab = Lab(Path(tempfile.mkdtemp(prefix="swu-", dir="/tmp")))
    try:
        image, archive = busybox_image(Path("/var/tmp/swarm-test-cache"))
        hosts = lab.add_hosts("m1", "w1", "w2", "w3")
        manager = start_cluster(hosts, archive, image=image, tags=(NEW_IMAGE,), drain_manager=True)[0]
        manager.docker("service", "create", "--name", "bench", "--replicas", str(replicas),
                       "--update-parallelism", str(parallelism), "--update-delay", "0s", "--update-monitor", "5s",
                       image, *WEB, timeout=300)

        start = time.monotonic()
        manager.docker("service", "update", "--detach", "--image", NEW_IMAGE, "bench")
        wait_for("all tasks new and running", lambda: new_and_running(manager, "bench") == replicas,
                 timeout=600, interval=0.1)
        running = time.monotonic() - start
        wait_for("update completed", lambda: manager.docker(
            "service", "inspect", "--format", "{{.UpdateStatus.State}}", "bench").stdout.strip() == "completed",
            timeout=120, interval=0.1)
        return running, time.monotonic() - start
    finally:
        lab.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--parallelism", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    runnings, completes = [], []
    for run in range(args.runs):
        running, complete = one_run(args.replicas, args.parallelism)
        runnings.append(running)
        completes.append(complete)
        print(f"run {run + 1}: all {args.replicas} new and running {running:.1f} s, update completed {complete:.1f} s",
              flush=True)
    print(f"rolling update of {args.replicas} tasks, parallelism {args.parallelism}: all new and running "
          f"median {statistics.median(runnings):.1f} s, completed median {statistics.median(completes):.1f} s")


if __name__ == "__main__":
    main()
