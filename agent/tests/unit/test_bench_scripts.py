"""The benchmark scripts run on a tiny size (benchmarks are scripts, not tests: only that they still work)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_scheduler_bench_runs_on_a_tiny_cluster():
    result = subprocess.run(
        [sys.executable, str(BENCH / "scheduler_bench.py"), "--nodes", "50", "--tasks", "100", "--runs", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("placement: 100 pending tasks, 50 nodes") and "decisions/s" in lines[0]
    assert [line.split(":")[1].split(" in ")[0].strip() for line in lines[1:]] == ["100 tasks", "1000 tasks"]
