"""The benchmarks that need lab hosts run on a tiny size (scripts, not benchmarks here: only that they work)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(script: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.splitlines()


def test_core_timings_runs():
    lines = run("core_timings.py", "--replicas", "3", "--runs", "1")
    assert lines[-2].startswith("create 3 replicas until all running: median")
    assert lines[-1].startswith("killed worker until all 3 run elsewhere: median")


def test_mesh_failover_runs():
    lines = run("mesh_failover.py", "--runs", "1")
    assert lines[-3].startswith("published port, request latency")
    assert lines[-2].startswith("node killed until requests to survivors stop failing: median")


def test_mesh_apply_runs():
    lines = run("mesh_apply.py", "--services", "20", "--endpoints", "60", "--runs", "3")
    assert lines, "mesh_apply printed nothing"


def test_update_bench_runs():
    lines = run("update_bench.py", "--replicas", "4", "--parallelism", "2", "--runs", "1")
    assert lines, "update_bench printed nothing"


@pytest.mark.requires("debootstrap", "dockerd", "docker")
def test_peer_swarm_runs_beside_docker_swarm():
    lines = run("peer_swarm.py", "--replicas", "3", "--scale-to", "5")
    header, *rows = ([cell.strip() for cell in line.split(" | ")] for line in lines[-7:])
    assert header == ["figure", "Docker Swarm", "swarm (this project)", "ratio", "goal", "met"], lines
    assert [row[0] for row in rows] == [
        "create 3 replicas until all running",
        "rolling update of 3 (parallelism 5, delay 0, monitor 5 s): all new running",
        "... until the update reads completed",
        "kill one of three workers until all 3 run on the others",
        "scale 3 to 5 (two workers left)",
        "request to a published port (8080) on each node",
    ], lines
    # This project's mesh answers on every node (Docker's needs IPVS, which these kernels lack).
    assert rows[-1][2].startswith("4/4 nodes answer"), lines
