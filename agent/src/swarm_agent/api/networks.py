"""``/networks``: swarm-scoped overlay networks (create, list, inspect, remove).

Only the ``overlay`` driver exists here: every network spans the swarm. The managers allocate its subnet (from
the cluster's default address pools unless one is given) and VXLAN ID when it is created; nodes build it when
a task of theirs needs it.
"""

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.models import Network, NetworkSpec
from ..manager.ipam import IpamError, plan_network
from ..pki import new_node_id
from ..store.state import AddressConflict, NameConflict
from ..store.state import Conflict as StoreConflict
from .app import Route, agent_of, filter_query, json_response, query_str, read_body
from .errors import BadRequest, Conflict, Forbidden
from .filters import match_label, parse_filters
from .lookup import resolve

if TYPE_CHECKING:
    from ..store.state import Snapshot

DRIVER = "overlay"
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
FILTERS = {"id", "name", "driver", "scope", "type", "label"}


def find_network(networks: dict[str, Network], ref: str) -> Network:
    return resolve("network", ref, networks.values(), lambda n: n.ID, lambda n: [n.Spec.Name])


def network_resource(network: Network) -> dict[str, Any]:
    """The network as ``GET /networks`` shows it (the Engine's NetworkResource)."""
    spec = network.Spec
    return {
        "Name": spec.Name,
        "Id": network.ID,
        "Created": network.CreatedAt,
        "Scope": "swarm",
        "Driver": DRIVER,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": (spec.IPAM.Driver if spec.IPAM else None) or "default",
            "Options": spec.IPAM.Options if spec.IPAM else None,
            "Config": [{"Subnet": network.Subnet, "Gateway": network.Gateway}],
        },
        "Internal": spec.Internal,
        "Attachable": spec.Attachable,
        "Ingress": spec.Ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": None,
        "Options": {**(spec.Options or {}), VNI_OPTION: str(network.VNI)},
        "Labels": spec.Labels or {},
    }


def users_of(network: Network, state: "Snapshot") -> list[str]:
    """Names of the services attached to ``network`` (ingress: the ones publishing ingress ports)."""
    users = []
    for service in state.services.values():
        targets = {a.Target for a in (service.Spec.TaskTemplate.Networks or []) + (service.Spec.Networks or [])}
        on_ingress = network.Spec.Ingress and any(v.NetworkID == network.ID for v in service.Endpoint.VirtualIPs or [])
        if network.ID in targets or on_ingress:
            users.append(service.Spec.Name)
    return sorted(users)


def check_spec(spec: NetworkSpec, state: "Snapshot") -> None:
    if spec.Driver != DRIVER:
        raise BadRequest(f"Driver: only {DRIVER!r} networks can be created on a swarm manager (got {spec.Driver!r})")
    if spec.Scope not in (None, "", "swarm"):
        raise BadRequest(f"Scope: overlay networks are swarm-scoped (got {spec.Scope!r})")
    if spec.EnableIPv6:
        raise BadRequest("EnableIPv6: overlay networks are IPv4 only on this cluster")
    if spec.ConfigOnly or spec.ConfigFrom:
        raise BadRequest("ConfigOnly/ConfigFrom: configuration-only networks are not supported")
    if (spec.Options or {}).get("encrypted") is not None:
        raise BadRequest("Options.encrypted: encrypted overlay traffic (IPsec) is not supported on this cluster")
    if spec.IPAM and spec.IPAM.Driver not in ("", "default"):
        raise BadRequest(f"IPAM.Driver: only the default IPAM driver exists here (got {spec.IPAM.Driver!r})")
    if spec.Ingress:
        if spec.Attachable:
            raise BadRequest("Attachable: an ingress network cannot be attachable")
        taken = [n.Spec.Name for n in state.networks.values() if n.Spec.Ingress]
        if taken:
            raise Forbidden(f"Ingress: ingress network {taken[0]} is already present; remove it first")


def new_network(spec: NetworkSpec, state: "Snapshot", net_id: str | None = None) -> Network:
    """Allocate a network for ``spec`` against what ``state`` holds; raises BadRequest naming the field."""
    cluster = state.cluster
    pools = cluster.DefaultAddrPool if cluster else ["10.0.0.0/8"]
    size = cluster.SubnetSize if cluster else 24
    try:
        return plan_network(
            net_id or new_node_id(), spec, pools, size,
            [n.Subnet for n in state.networks.values()], {n.VNI for n in state.networks.values()},
        )
    except IpamError as exc:
        raise BadRequest(str(exc)) from None


async def list_networks(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    filters = parse_filters(query_str(request, "filters"), FILTERS)
    await mgr.cache.barrier()
    out = []
    for network in mgr.cache.state.networks.values():
        if "id" in filters and not any(network.ID.startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(v in network.Spec.Name for v in filters["name"]):
            continue
        if "driver" in filters and DRIVER not in filters["driver"]:
            continue
        if "scope" in filters and "swarm" not in filters["scope"]:
            continue
        if "type" in filters and "custom" not in filters["type"]:
            continue
        if "label" in filters and not match_label(network.Spec.Labels or {}, filters["label"]):
            continue
        out.append(network_resource(network))
    out.sort(key=lambda n: n["Name"])
    return json_response(out)


async def inspect_network(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    return json_response(network_resource(find_network(mgr.cache.state.networks, request.match_info["id"])))


async def create_network(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    spec: NetworkSpec = await read_body(request, "network spec")
    await mgr.cache.barrier()
    state = mgr.cache.state
    check_spec(spec, state)
    network = new_network(spec, state)
    try:
        await mgr.store.create(network)
    except NameConflict:
        raise Conflict(f"network with name {spec.Name} already exists") from None
    except AddressConflict as exc:
        raise BadRequest(f"IPAM.Config: {exc}; try again") from None
    mgr.log_event("network created", network=network.ID, name=spec.Name, subnet=network.Subnet, vni=network.VNI)
    return json_response({"Id": network.ID, "Warning": ""}, status=201)


async def remove_network(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    state = mgr.cache.state
    network = find_network(state.networks, request.match_info["id"])
    users = users_of(network, state)
    if users:
        raise Forbidden(f"network {network.Spec.Name} is in use by service(s) {', '.join(users)}: remove them first")
    try:
        await mgr.store.delete(network)
    except StoreConflict:
        raise Conflict(f"network {network.Spec.Name} changed while being removed; try again") from None
    mgr.log_event("network removed", network=network.ID, name=network.Spec.Name)
    return web.Response(status=204)


ROUTES = [
    Route("GET", "/networks", list_networks, "manager", query=(filter_query(FILTERS),)),
    Route("POST", "/networks/create", create_network, "manager", body=NetworkSpec),
    Route("GET", "/networks/{id}", inspect_network, "manager"),
    Route("DELETE", "/networks/{id}", remove_network, "manager"),
]
