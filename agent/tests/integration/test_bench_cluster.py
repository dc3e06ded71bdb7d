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
