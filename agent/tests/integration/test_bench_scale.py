"""bench/scale.py runs on a tiny size against a real manager and hollow nodes (a script, not a benchmark here)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.requires("lab", "busybox")]

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_scale_script_runs_on_a_tiny_cluster():
    result = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--managers", "2", "--nodes", "5", "--kill", "2",
         "--tasks", "20", "--services", "2", "--settle", "0", "--rest-seconds", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    out = result.stdout
    assert "5 hollow nodes joined and ready" in out
    assert "all running after" in out and "service create: p50" in out
    assert "manager (swarmd): CPU" in out and "hollow fleet: CPU" in out
    assert "2 hollow nodes killed" in out and "all 20 tasks running on the other nodes after" in out
