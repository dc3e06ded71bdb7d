#!/usr/bin/env python3
"""Time the nftables routing mesh with 1,000 services and 10,000 endpoints present, through the real nft.

Prints:
- full: rebuilding the whole table (what an agent does at start);
- incremental: applying one changed service (one backend replaced) with everything else present: the whole
  `NftablesMesh.apply` (render, diff, `nft -f -`), and of that the nft transaction alone. A service has one VIP
  (every port) and one published port, so a change rewrites two chains;
- reconcile: a restarted agent adopting the table (`nft -j list` of it, parse, one transaction).

Runs in a scratch network namespace it creates and deletes. Run as root from the repository root:
``.venv/bin/python bench/mesh_apply.py [--services 1000] [--endpoints 10000] [--runs 21]``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "src"))

from swarm_agent.net.mesh.model import (
    Backend,
    Frontend,
    MeshService,
    MeshState,
    mesh_state,
)
from swarm_agent.net.mesh.nftables import NftablesMesh


def make_state(services: int, endpoints: int, generation: int = 0, changed: int = -1) -> MeshState:
    per_service = endpoints // services
    out = []
    for i in range(services):
        base = i * per_service
        backends = [Backend(f"10.{64 + (base + j) // 65536}.{(base + j) // 256 % 256}.{(base + j) % 256}")
                    for j in range(per_service)]
        if i == changed:
            # One task replaced by another: a fresh address outside every other service's.
            backends[0] = Backend(f"10.200.{generation // 256 % 256}.{generation % 256}")
        out.append(MeshService(f"svc{i:05d}", vips=(f"10.9.{i // 256}.{i % 256}",),
                               published=(Frontend("tcp", 30000 + i, 80),), backends=tuple(backends)))
    return mesh_state(*out)


class TimedMesh(NftablesMesh):
    """Records how long each nft transaction took, to split nft's share from the Python side's."""

    commits: list[float]

    def _commit(self, script: str, what: str) -> None:
        started = time.perf_counter()
        super()._commit(script, what)
        self.commits.append(time.perf_counter() - started)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()

    netns = f"mshbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        mesh = TimedMesh(("ip", "netns", "exec", netns, "nft"))
        mesh.commits = []
        base = make_state(args.services, args.endpoints)

        fulls = []
        for _ in range(3):
            started = time.perf_counter()
            mesh.full(base)
            fulls.append(time.perf_counter() - started)

        mesh.commits = []
        incremental = []
        for run in range(args.runs):
            # Alternate between two services so that every run is a real change.
            state = make_state(args.services, args.endpoints, generation=run + 1, changed=run % 2 * 500)
            started = time.perf_counter()
            mesh.apply(state)
            incremental.append(time.perf_counter() - started)
        nft_only = list(mesh.commits)

        reconciles = []
        for run in range(3):
            restarted = TimedMesh(("ip", "netns", "exec", netns, "nft"))
            restarted.commits = []
            started = time.perf_counter()
            restarted.reconcile_on_start(make_state(args.services, args.endpoints, generation=900 + run,
                                                    changed=7))
            reconciles.append(time.perf_counter() - started)
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)

    print(f"mesh_apply: {args.services} services, {args.endpoints} endpoints, nft "
          f"{subprocess.run(['nft', '--version'], capture_output=True, text=True, check=True).stdout.split()[1]}")
    print(f"full rebuild:           median {ms(statistics.median(fulls))} of {len(fulls)}")
    print(f"incremental (1 service): median {ms(statistics.median(incremental))}, "
          f"max {ms(max(incremental))} of {len(incremental)}; nft transaction alone: median "
          f"{ms(statistics.median(nft_only))}")
    print(f"reconcile at start:     median {ms(statistics.median(reconciles))} of {len(reconciles)}")
    goal = statistics.median(incremental) < 0.1
    print(f"goal (incremental under 100 ms): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
