"""What every node knows about every running task, and what follows from it: the routing mesh's services,
the VIPs each overlay bridge holds, the names the resolver answers, and each network's peers.

Each node publishes its own running tasks in the gossip table ``endpoints`` (key: task ID) and the networks it
has built in the table ``peers`` (key: ``<network id>/<node id>``). Gossip drops a node's entries everywhere
when the node dies or leaves, so its tasks leave the mesh and DNS of every other node without waiting for the
managers. Pure functions here; ``dataplane`` applies their results.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api.models import ServiceEndpoint, Task
from .mesh.model import Backend, Frontend, MeshService, MeshState

ENDPOINTS = "endpoints"
PEERS = "peers"


@dataclass(frozen=True)
class Endpoint:
    """One running task as gossip carries it."""

    task_id: str
    service_id: str
    service_name: str
    mode: str  # "vip" or "dnsrr"
    addresses: Mapping[str, str]  # network ID -> the task's address there
    vips: Mapping[str, str]  # network ID -> the service's VIP there
    aliases: Mapping[str, tuple[str, ...]]  # network ID -> extra names of the service there
    published: tuple[tuple[str, int, int], ...]  # ingress ports: (protocol, published, target)

    @classmethod
    def parse(cls, task_id: str, value: Mapping[str, Any]) -> Endpoint:
        """From a gossip value; raises ValueError on anything malformed, so one bad entry is skipped, not
        rendered into the kernel."""
        try:
            networks = value["networks"]
            addresses = {n: str(ipaddress.IPv4Address(v["ip"])) for n, v in networks.items()}
            vips = {n: str(ipaddress.IPv4Address(v["vip"])) for n, v in networks.items() if v.get("vip")}
            aliases = {n: tuple(str(a).lower() for a in v.get("aliases") or ()) for n, v in networks.items()}
            published = tuple((str(p), int(pub), int(tgt)) for p, pub, tgt in value.get("published") or ())
            return cls(task_id, str(value["service"]), str(value["name"]).lower(), str(value.get("mode", "vip")),
                       addresses, vips, aliases, published)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"endpoint entry of task {task_id} is malformed: {exc!r}") from None


def endpoint_value(task: Task, service_name: str, endpoint: ServiceEndpoint | None) -> dict[str, Any]:
    """What a node publishes for one of its running tasks."""
    vips = {v.NetworkID: v.Addr.split("/")[0] for v in endpoint.VirtualIPs or []} if endpoint else {}
    networks = {}
    for attachment in task.NetworksAttachments or []:
        network_id = attachment.Network["ID"]
        networks[network_id] = {
            "ip": attachment.Addresses[0].split("/")[0],
            "vip": vips.get(network_id),
            "aliases": attachment.Aliases or [],
        }
    published = [
        [p.Protocol, p.PublishedPort, p.TargetPort]
        for p in (endpoint.Ports or [] if endpoint else [])
        if p.PublishMode == "ingress" and p.PublishedPort and p.Protocol in ("tcp", "udp")
    ]
    mode = endpoint.Spec.Mode if endpoint else "vip"
    return {"service": task.ServiceID, "name": service_name, "mode": mode, "networks": networks,
            "published": published}


def parse_all(values: Mapping[str, Mapping[str, Any]]) -> tuple[list[Endpoint], list[str]]:
    """Every well-formed endpoint, and the errors of the others."""
    good, errors = [], []
    for task_id, value in values.items():
        try:
            good.append(Endpoint.parse(task_id, value))
        except ValueError as exc:
            errors.append(str(exc))
    return good, errors


def mesh_key(service_id: str, network_id: str) -> str:
    return f"{service_id}_{network_id[:12]}"


def mesh_state(endpoints: Sequence[Endpoint], local_networks: Mapping[str, str], ingress_id: str | None) -> MeshState:
    """The mesh of a node that has built ``local_networks`` (ID -> name): one mesh service per service and
    network, its VIP forwarding to the tasks' addresses on that network; published ports on the ingress one."""
    backends: dict[tuple[str, str], set[str]] = defaultdict(set)
    vips: dict[tuple[str, str], str] = {}
    published: dict[tuple[str, str], set[tuple[str, int, int]]] = defaultdict(set)
    for ep in endpoints:
        for network_id, ip in ep.addresses.items():
            if network_id not in local_networks:
                continue
            key = (ep.service_id, network_id)
            backends[key].add(ip)
            if ep.mode == "vip" and network_id in ep.vips:
                vips[key] = ep.vips[network_id]
            if network_id == ingress_id:
                published[key].update(ep.published)
    state: MeshState = {}
    for key, ips in backends.items():
        if key not in vips and not published.get(key):
            continue  # dnsrr on a network without published ports: DNS alone reaches it
        frontends = {(proto, port): Frontend(proto, port, target) for proto, port, target in sorted(published[key])}
        state[mesh_key(*key)] = MeshService(
            mesh_key(*key), vips=(vips[key],) if key in vips else (),
            published=tuple(frontends.values()), backends=tuple(Backend(ip) for ip in sorted(ips)),
        )
    return state


def vips_by_network(endpoints: Sequence[Endpoint], local_networks: Mapping[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {n: set() for n in local_networks}
    for ep in endpoints:
        if ep.mode != "vip":
            continue
        for network_id, vip in ep.vips.items():
            if network_id in out:
                out[network_id].add(vip)
    return out


class NameTable:
    """The resolver's view: per network, service names and aliases to VIPs or task addresses."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._names: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        # (network, a task's address there) -> the task's other networks.
        self._other_networks: dict[tuple[str, str], list[str]] = {}
        for ep in endpoints:
            for network_id, ip in ep.addresses.items():
                self._other_networks[(network_id, ip)] = sorted(n for n in ep.addresses if n != network_id)
                names = self._names[network_id]
                own = (ep.service_name, *ep.aliases.get(network_id, ()))
                vip = ep.vips.get(network_id) if ep.mode == "vip" else None
                for name in own:
                    names[name].add(vip or ip)
                    names[f"tasks.{name}"].add(ip)

    def lookup(self, network_id: str, name: str) -> list[str] | None:
        found = self._names.get(network_id, {}).get(name)
        return sorted(found) if found is not None else None

    def networks_of(self, network_id: str, client: str) -> list[str]:
        """The other networks of the task at ``client`` on ``network_id``: a container asks one resolver (its
        first network's) for every name, and must still find the services of its other networks, as in Docker."""
        return self._other_networks.get((network_id, client), [])


def peers_by_network(values: Mapping[str, Mapping[str, Any]], self_node: str) -> dict[str, set[str]]:
    """``peers`` table -> network ID -> underlay addresses of the other nodes that built it."""
    out: dict[str, set[str]] = defaultdict(set)
    for key, value in values.items():
        network_id, _, node_id = key.partition("/")
        if node_id == self_node:
            continue
        try:
            address = str(ipaddress.IPv4Address(value["addr"]))
        except (KeyError, TypeError, ValueError):
            continue
        out[network_id].add(address)
    return out
