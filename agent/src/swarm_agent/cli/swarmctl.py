"""``swarmctl``: what Docker's CLI has no verb for (agent and cluster status, rebalancing a service)."""

import argparse
import json
import sys
from typing import Any

import aiohttp
import asyncio


async def _call(socket_path: str, method: str, path: str, body: Any = None) -> Any:
    connector = aiohttp.UnixConnector(path=socket_path)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.request(method, f"http://swarm{path}", json=body,
                                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            answer = await resp.json(content_type=None)
            if resp.status != 200:
                raise SystemExit(f"swarmctl: {answer.get('message', resp.status)}")
            return answer


async def _rebalance(socket_path: str, name: str) -> str:
    """Spread a service again: a forced rolling update, so its UpdateConfig paces it and the scheduler places
    each replacement on the least loaded node that fits (Swarm never moves running tasks by itself)."""
    service = await _call(socket_path, "GET", f"/v1.41/services/{name}")
    spec = service["Spec"]
    spec["TaskTemplate"]["ForceUpdate"] = spec["TaskTemplate"].get("ForceUpdate", 0) + 1
    await _call(socket_path, "POST", f"/v1.41/services/{service['ID']}/update?version={service['Version']['Index']}",
                spec)
    return service["ID"]


def _print_status(status: dict[str, Any]) -> None:
    print(f"Node:          {status['node_id'] or '-'} ({status['role'] or 'not in a swarm'}, {status['local_state']})")
    print(f"Swarm:         {status['cluster_id'] or '-'}")
    print(f"Agent:         swarmd {status['version']}")
    print(f"Session with:  {status['session_manager'] or '-'} ({status['assigned_tasks']} tasks assigned here)")
    print(f"Log streams:   {status['log_streams']} published from here")
    if "leader" in status:
        print(f"Leader:        {status['leader']}{' (this node)' if status['is_leader'] else ''}")
        print(f"Managers up:   {len(status['managers'])}")
        print(f"Store:         revision {status['store_revision']}, {status['services']} services, {status['tasks']} tasks")
        print(f"Log requests:  {status['log_subscriptions']} open in the swarm")
        print("Nodes:")
        for node_id, node in sorted(status["nodes"].items(), key=lambda kv: kv[1]["hostname"]):
            print(f"  {node_id}  {node['hostname']:<16} {node['role']:<8} {node['state']:<8} {node['availability']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="swarmctl", description="Swarm agent and cluster status.")
    parser.add_argument("-H", "--host", default="unix:///run/swarm/swarm.sock", help="the agent's socket")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="this agent and, on a manager, the cluster")
    service = sub.add_parser("service", help="services")
    service_sub = service.add_subparsers(dest="service_command", required=True)
    rebalance = service_sub.add_parser("rebalance", help="spread a service's tasks again, as a rolling update")
    rebalance.add_argument("name", help="service name or ID")
    args = parser.parse_args(argv)
    if not args.host.startswith("unix://"):
        parser.error("only unix:// sockets are supported")
    socket_path = args.host[len("unix://"):]
    if args.command == "service":
        service_id = asyncio.run(_rebalance(socket_path, args.name))
        print(f"service {args.name} ({service_id}): rebalancing as a rolling update; follow with docker service ps")
        return
    status = asyncio.run(_call(socket_path, "GET", "/swarmd/agent"))
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        print()
    else:
        _print_status(status)


if __name__ == "__main__":
    main()
