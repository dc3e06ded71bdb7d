"""The benchmark scripts run on a tiny size (benchmarks are scripts, not tests: only that they still work)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"


def run_bench(script: str, *args: str) -> list[str]:
    """The script's output lines; it must succeed within a minute."""
    result = subprocess.run([sys.executable, str(BENCH / script), *args],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_scheduler_bench_runs_on_a_tiny_cluster():
    lines = run_bench("scheduler_bench.py", "--nodes", "50", "--tasks", "100", "--runs", "1")
    assert lines[0].startswith("placement: 100 pending tasks, 50 nodes") and "decisions/s" in lines[0]
    assert [line.split(":")[1].split(" in ")[0].strip() for line in lines[1:]] == ["100 tasks", "1000 tasks"]


def test_dns_resolver_bench_runs_a_few_queries():
    lines = run_bench("dns_resolver.py", "--queries", "40", "--window", "4")
    assert [line.split(":")[0] for line in lines] == ["our name, 10 addresses (tasks.web)",
                                                      "forwarded to the upstream"]
    assert lines[0].split(": ")[1].startswith("40 queries in") and lines[1].split(": ")[1].startswith("10 queries")


def test_secrets_bench_runs_briefly():
    lines = run_bench("secrets_bench.py", "--runs", "1", "--seconds", "0.01")
    assert lines[0].split() == ["value", "size", "seal/s", "open/s", "open", "µs"]
    assert [line.split()[0] for line in lines[1:]] == ["64", "1024", "65536", "512000"]
