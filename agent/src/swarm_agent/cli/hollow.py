"""``swarmd-hollow``: many simulated workers in one process, for scale tests (see ``worker/hollow.py``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..api.duration import SECOND, parse_duration
from ..api.errors import ApiError
from ..loop_watch import LoopWatch
from ..node import DEFAULT_PORT, split_addr
from ..pki import RENEW_WINDOW
from ..worker.hollow import HollowConfig, HollowFleet
from .swarmd import renew_window

log = logging.getLogger("swarmd-hollow")


def seconds(text: str) -> float:
    """``0.5`` (seconds) or a Go-style duration such as ``500ms``."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not isinstance(value, int) or value < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}")
    return value / SECOND


def rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"failure rate must be between 0 and 1, got {text}")
    return value


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key or not sep:
        raise argparse.ArgumentTypeError(f"engine label must be KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="swarmd-hollow",
        description="Run N simulated workers (hollow nodes) that join a swarm for real and pretend to run tasks.",
    )
    parser.add_argument("--manager", required=True, help="a manager's address, IP[:PORT] (port 2377 by default)")
    parser.add_argument("--token", required=True, help="the swarm's worker join token")
    parser.add_argument("--count", type=int, required=True, help="how many hollow nodes to run")
    parser.add_argument("--start-delay", type=seconds, default=0.5, help="time a task takes to start (0.5, 500ms)")
    parser.add_argument("--failure-rate", type=rate, default=0.0, help="share of tasks that fail on start, 0 to 1")
    parser.add_argument("--name-prefix", default="hollow", help="hostnames are PREFIX-0001, PREFIX-0002, ...")
    parser.add_argument("--seed", type=int, default=None, help="seed of the failure draws, for repeatable runs")
    parser.add_argument("--join-concurrency", type=int, default=8, help="joins in flight at once")
    parser.add_argument("--cpus", type=float, default=4.0, help="CPUs each hollow node reports")
    parser.add_argument("--memory-mib", type=int, default=8192, help="memory each hollow node reports, in MiB")
    parser.add_argument("--engine-label", type=label, action="append", default=[], dest="engine_labels",
                        help="engine label each hollow node reports, KEY=VALUE (repeatable)")
    parser.add_argument("--cert-renew-window", type=renew_window, default=RENEW_WINDOW, metavar="LOW:HIGH",
                        help="renew each node's certificate between these fractions of its lifetime (as swarmd)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.join_concurrency < 1:
        parser.error("--join-concurrency must be at least 1")
    return args


def _raise_open_files_limit() -> None:
    # Each hollow node holds up to three connections to its manager; the default soft limit (1024) is too low.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# A fleet whose event loop answers later than this is too slow for the figures measured against it: its
# heartbeats, reports and session timeouts are all that late.
STALL_REPORTED = 5.0


def _report_stalls(watch: LoopWatch) -> None:
    """Log when the fleet's event loop stops answering within STALL_REPORTED seconds, and when it answers again."""
    worst = 0.0
    while watch.ask():
        time.sleep(1.0)
        silent = watch.silent_for()
        if silent > STALL_REPORTED and not worst:
            log.warning("the fleet's event loop has not answered for %.1f s: its nodes' heartbeats are that late",
                        silent)
        if silent > STALL_REPORTED:
            worst = max(worst, silent)
        elif worst:
            log.warning("the fleet's event loop answers again, after %.1f s at worst", worst)
            worst = 0.0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Fleet progress (nodes joined) is what an operator watches, whatever the agent's own log level; each hollow
    # container's start and stop are at DEBUG: a line per task, from the executors' threads, was a fleet's
    # heaviest use of the interpreter lock outside its event loop.
    logging.getLogger("swarm_agent.worker.hollow").setLevel(min(logging.INFO, logging.getLevelName(args.log_level)))
    _raise_open_files_limit()
    host, port = split_addr(args.manager, DEFAULT_PORT)
    config = HollowConfig(
        manager=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        token=args.token,
        count=args.count,
        start_delay=args.start_delay,
        failure_rate=args.failure_rate,
        name_prefix=args.name_prefix,
        seed=args.seed,
        join_concurrency=args.join_concurrency,
        nano_cpus=int(args.cpus * 1e9),
        memory_bytes=args.memory_mib << 20,
        engine_labels=dict(args.engine_labels),
        renew_window=args.cert_renew_window,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        # Every session calls its executor through to_thread; the default pool (CPUs + 4) would queue them.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="hollow"))
        threading.Thread(target=_report_stalls, args=(LoopWatch(loop),), name="stall-report", daemon=True).start()
        task = asyncio.create_task(HollowFleet(config).run())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("stopping %d hollow nodes on signal", config.count)

    try:
        asyncio.run(run())
    except ApiError as exc:
        log.error("hollow nodes could not join: %s", exc.message)
        sys.exit(1)


if __name__ == "__main__":
    main()
