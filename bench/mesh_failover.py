#!/usr/bin/env python3
"""Routing mesh on lab hosts: request latency through a published port, and how long a node's death hurts.

One manager (drained) and three workers, each with its own Docker engine; a 3-replica web service published
on 8080 (one task per worker). Prints:
- latency of requests to 8080 on every node (median and p99 over all nodes);
- after one worker vanishes (agent killed, link cut): time from the kill until the last failed request to
  a surviving node's 8080 (the mesh whole again), and until the managers run 3 tasks on the survivors.

Run as root from the repository root: ``.venv/bin/python bench/mesh_failover.py [--runs K]``.
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "tests"))

from harness.cluster import HOSTNAME_WEB, http_get, running_tasks, start_cluster, wait_for  # noqa: E402
from harness.hosts import Lab  # noqa: E402
from harness.image import busybox_image  # noqa: E402

def request(ip: str) -> tuple[bool, float]:
    start = time.monotonic()
    answered = http_get(ip, 8080, timeout=1) is not None
    return answered, time.monotonic() - start


def one_run() -> tuple[list[float], float, float]:
    lab = Lab(Path(tempfile.mkdtemp(prefix="swb-", dir="/tmp")))
    try:
        image, archive = busybox_image(Path("/var/tmp/swarm-test-cache"))
        nodes = start_cluster(lab.add_hosts("m1", "w1", "w2", "w3"), archive, drain_manager=True)
        manager, workers = nodes[0], nodes[1:]
        manager.docker("service", "create", "--detach", "--name", "web", "--replicas", "3",
                       "--publish", "published=8080,target=80", image, *HOSTNAME_WEB)
        wait_for("3 running", lambda: len(running_tasks(manager, "web")) == 3, timeout=120)
        wait_for("8080 on every node", lambda: all(request(n.host.ip)[0] for n in nodes), timeout=60)

        latencies = []
        for _ in range(50):
            for node in nodes:
                ok, took = request(node.host.ip)
                if ok:
                    latencies.append(took)

        victim = workers[0]
        survivors = [n for n in nodes if n is not victim]
        failures: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                for node in survivors:
                    ok, _ = request(node.host.ip)
                    if not ok:
                        failures.append(time.monotonic())

        prober = threading.Thread(target=probe, daemon=True)
        killed = time.monotonic()
        victim.kill()
        victim.host.run("ip", "link", "set", "eth0", "down")
        prober.start()
        wait_for("3 running on the survivors",
                 lambda: len([t for t in running_tasks(manager, "web") if t["NodeID"] != victim.node_id]) == 3,
                 timeout=120, interval=0.1)
        rescheduled = time.monotonic() - killed
        time.sleep(5)  # requests keep flowing: a late failure would still count
        stop.set()
        prober.join()
        mesh_whole = (max(failures) - killed) if failures else 0.0
        return latencies, mesh_whole, rescheduled
    finally:
        lab.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    all_latencies, wholes, reschedules = [], [], []
    for run in range(args.runs):
        latencies, whole, rescheduled = one_run()
        all_latencies += latencies
        wholes.append(whole)
        reschedules.append(rescheduled)
        print(f"run {run + 1}: last failed request {whole:.1f} s after the kill; "
              f"3 tasks running on survivors after {rescheduled:.1f} s", flush=True)
    all_latencies.sort()
    p99 = all_latencies[int(0.99 * (len(all_latencies) - 1))]
    print(f"published port, request latency (curl, {len(all_latencies)} requests): "
          f"median {statistics.median(all_latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    print(f"node killed until requests to survivors stop failing: median {statistics.median(wholes):.1f} s")
    print(f"node killed until its tasks run elsewhere: median {statistics.median(reschedules):.1f} s")


if __name__ == "__main__":
    main()
