#!/usr/bin/env python3
"""Sealing and opening secret values: what a create costs the API, and what each assignment costs the dispatcher.

The dispatcher opens every value the node's live tasks use each time it recomputes that node's assignment
(manager/dispatcher.py ``_values``), so this sets the price of secrets on a busy cluster: per value size,
seals and opens per second (AES-256-GCM, fresh nonce, the object's ID as associated data), median of
``--runs``.

Run from the repository root: ``.venv/bin/python bench/secrets_bench.py [--runs 5] [--seconds 0.5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent" / "src"))

from swarm_agent.manager.keys import new_key, seal, unseal, value_aad  # noqa: E402

SIZES = (64, 1024, 64 * 1024, 500 * 1024)


def rate(action, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        action()
        count += 1
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one run")
    args = parser.parse_args()
    key, aad = new_key(), value_aad("secret", "x" * 25)
    print(f"{'value size':>12} {'seal/s':>12} {'open/s':>12} {'open µs':>10}")
    for size in SIZES:
        value = os.urandom(size)
        sealed = seal(key, value, aad)
        seals = statistics.median(rate(lambda: seal(key, value, aad), args.seconds) for _ in range(args.runs))
        opens = statistics.median(rate(lambda: unseal(key, sealed, aad), args.seconds) for _ in range(args.runs))
        print(f"{size:>12} {seals:>12,.0f} {opens:>12,.0f} {1e6 / opens:>10.1f}")


if __name__ == "__main__":
    main()
