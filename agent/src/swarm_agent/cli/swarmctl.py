"""``swarmctl``: what Docker's CLI has no verb for (agent and cluster status)."""

import argparse
import json
import sys
from typing import Any

import aiohttp
import asyncio


async def _get(socket_path: str, path: str) -> Any:
    connector = aiohttp.UnixConnector(path=socket_path)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"http://swarm{path}", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise SystemExit(f"swarmctl: {body.get('message', resp.status)}")
            return body


def _print_status(status: dict[str, Any]) -> None:
    print(f"Node:          {status['node_id'] or '-'} ({status['role'] or 'not in a swarm'}, {status['local_state']})")
    print(f"Swarm:         {status['cluster_id'] or '-'}")
    print(f"Agent:         swarmd {status['version']}")
    print(f"Session with:  {status['session_manager'] or '-'} ({status['assigned_tasks']} tasks assigned here)")
    if "leader" in status:
        print(f"Leader:        {status['leader']}{' (this node)' if status['is_leader'] else ''}")
        print(f"Managers up:   {len(status['managers'])}")
        print(f"Store:         revision {status['store_revision']}, {status['services']} services, {status['tasks']} tasks")
        print("Nodes:")
        for node_id, node in sorted(status["nodes"].items(), key=lambda kv: kv[1]["hostname"]):
            print(f"  {node_id}  {node['hostname']:<16} {node['role']:<8} {node['state']:<8} {node['availability']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="swarmctl", description="Swarm agent and cluster status.")
    parser.add_argument("-H", "--host", default="unix:///run/swarm/swarm.sock", help="the agent's socket")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="this agent and, on a manager, the cluster")
    args = parser.parse_args(argv)
    if not args.host.startswith("unix://"):
        parser.error("only unix:// sockets are supported")
    status = asyncio.run(_get(args.host[len("unix://"):], "/swarmd/agent"))
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        print()
    else:
        _print_status(status)


if __name__ == "__main__":
    main()
