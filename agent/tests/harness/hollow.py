"""Hollow nodes on a lab host: one ``swarmd-hollow`` process running many simulated workers."""

from __future__ import annotations

import subprocess
import sys

from .cluster import SwarmNode
from .hosts import Host


def start_hollow(
    host: Host,
    manager: SwarmNode,
    count: int,
    *,
    start_delay: str = "0.2s",
    failure_rate: float = 0.0,
    name_prefix: str = "hollow",
    seed: int = 1,
    join_concurrency: int = 8,
    log_level: str = "WARNING",
    log_name: str = "hollow",
    renew_window: str = "",
) -> subprocess.Popen:
    """Start ``count`` hollow workers in ``host``'s namespace, joined to ``manager`` with its worker token.

    The process belongs to the host: ``Lab.cleanup`` kills it at the latest.
    """
    token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
    argv = [
        sys.executable, "-m", "swarm_agent.cli.hollow",
        "--manager", manager.addr,
        "--token", token,
        "--count", str(count),
        "--start-delay", start_delay,
        "--failure-rate", str(failure_rate),
        "--name-prefix", name_prefix,
        "--seed", str(seed),
        "--join-concurrency", str(join_concurrency),
        "--log-level", log_level,
        *(["--cert-renew-window", renew_window] if renew_window else []),
    ]
    return host.spawn(argv, log_name)


def ready_nodes(manager: SwarmNode) -> int:
    """How many nodes ``docker node ls`` shows Ready."""
    return manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split().count("Ready")
