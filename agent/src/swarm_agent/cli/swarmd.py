"""``swarmd``: the node agent daemon."""

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ..node import AgentConfig, NodeAgent
from ..pki import check_renew_window


def renew_window(text: str) -> tuple[float, float]:
    """The ``--cert-renew-window LOW:HIGH`` of swarmd and swarmd-hollow."""
    try:
        low, high = (float(part) for part in text.split(":"))
        return check_renew_window((low, high))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid renewal window {text!r}: want LOW:HIGH fractions, {exc}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = AgentConfig()
    parser = argparse.ArgumentParser(prog="swarmd", description="Swarm node agent: manager and worker in one process.")
    parser.add_argument("--data-dir", type=Path, default=defaults.data_dir, help="state, certificates and etcd data")
    parser.add_argument("--socket", type=Path, default=defaults.socket, help="the root-only Docker API socket")
    parser.add_argument("--docker-host", default=defaults.docker_url, help="this node's Docker engine")
    parser.add_argument("--hostname", default=defaults.hostname, help="the name this node reports")
    parser.add_argument("--etcd-binary", default=defaults.etcd_binary, help="etcd executable for the manager role")
    parser.add_argument("--etcd-endpoint", action="append", default=[], dest="etcd_endpoints",
                        help="use this etcd (plain HTTP, no client certificate: for development and tests) "
                             "instead of starting a member (repeatable)")
    parser.add_argument("--mesh-backend", choices=["nftables", "ipvs"], default=None,
                        help="routing mesh backend (default nftables; ipvs only where the kernel has it)")
    parser.add_argument("--cert-renew-window", type=renew_window, default=defaults.renew_window, metavar="LOW:HIGH",
                        help="renew this node's certificate at a random point between these fractions of its "
                             "lifetime (default 0.5:0.8, as Swarm; tests use small fractions to see renewals)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = AgentConfig(
        data_dir=args.data_dir,
        socket=args.socket,
        docker_url=args.docker_host,
        hostname=args.hostname,
        etcd_binary=args.etcd_binary,
        etcd_endpoints=args.etcd_endpoints,
        mesh_backend=args.mesh_backend,
        renew_window=args.cert_renew_window,
    )

    async def run() -> None:
        task = asyncio.create_task(NodeAgent(config).run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            logging.getLogger("swarmd").info("stopping on signal")

    asyncio.run(run())


if __name__ == "__main__":
    main()
