"""``/nodes``: list, inspect, update (availability, labels, role) with ``version``, remove."""

from aiohttp import web

from ..store.state import Conflict as StoreConflict
from .app import VERSION, Route, agent_of, filter_query, flag, json_response, query_bool, query_str, query_version, read_body
from .errors import BadRequest, Conflict
from .filters import match_label, parse_filters
from .lookup import resolve
from .models import Node, NodeManagerStatus, NodeSpec, now


FILTERS = {"id", "name", "label", "node.label", "role", "membership"}


def find_node(nodes: dict[str, Node], ref: str) -> Node:
    return resolve(
        "node", ref, nodes.values(), lambda n: n.ID, lambda n: [x for x in (n.Spec.Name, n.Description.Hostname) if x]
    )


def presented(node: Node, request: web.Request) -> Node:
    """The node as clients see it: manager status derived from the live manager records."""
    mgr = agent_of(request).require_manager()
    state = mgr.cache.state
    out = node.model_copy()
    record = state.managers.get(node.ID)
    if node.Spec.Role == "manager" or record is not None:
        leader = (state.leader or {}).get("node_id")
        out.ManagerStatus = NodeManagerStatus(
            Leader=leader == node.ID,
            Reachability="reachable" if record is not None else "unreachable",
            Addr=(record or {}).get("api_addr", f"{node.Status.Addr}:2377"),
        )
    return out


async def list_nodes(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    filters = parse_filters(query_str(request, "filters"), FILTERS)
    await mgr.cache.barrier()
    out = []
    for node in mgr.cache.state.nodes.values():
        if "id" in filters and not any(node.ID.startswith(v) for v in filters["id"]):
            continue
        names = [node.Spec.Name or "", node.Description.Hostname]
        if "name" in filters and not any(n.startswith(v) for v in filters["name"] for n in names if n):
            continue
        if "label" in filters and not match_label(node.Description.Engine.Labels, filters["label"]):
            continue
        if "node.label" in filters and not match_label(node.Spec.Labels, filters["node.label"]):
            continue
        if "role" in filters and node.Spec.Role not in filters["role"]:
            continue
        if "membership" in filters and "accepted" not in filters["membership"]:
            continue
        out.append(presented(node, request).wire())
    out.sort(key=lambda n: n["Description"]["Hostname"])
    return json_response(out)


async def inspect_node(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    return json_response(presented(find_node(mgr.cache.state.nodes, request.match_info["id"]), request).wire())


async def update_node(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    version = query_version(request)
    spec: NodeSpec = await read_body(request, "node spec")
    await mgr.cache.barrier()
    state = mgr.cache.state
    node = find_node(state.nodes, request.match_info["id"])
    if node.Spec.Role == "manager" and spec.Role == "worker":
        managers = [n for n in state.nodes.values() if n.Spec.Role == "manager"]
        if len(managers) <= 1:
            raise BadRequest("attempting to demote the last manager of the swarm")
    updated = node.model_copy(deep=True)
    updated.Version.Index = version
    updated.Spec = spec
    updated.UpdatedAt = now()
    try:
        await mgr.store.update(updated)
    except StoreConflict:
        raise Conflict(
            f"update out of sequence: node {node.Description.Hostname} is at version {node.Version.Index}, "
            f"the update was based on version {version}"
        ) from None
    mgr.log_event("node updated", node=node.ID, availability=spec.Availability, role=spec.Role)
    return web.Response(status=200)


async def remove_node(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    force = query_bool(request, "force")
    await mgr.cache.barrier()
    node = find_node(mgr.cache.state.nodes, request.match_info["id"])
    if node.Spec.Role == "manager" or node.ID in mgr.cache.state.managers:
        raise BadRequest(
            f"node {node.ID} is a cluster manager and is a member of the raft cluster. "
            "It must be demoted to worker before removal"
        )
    if node.Status.State == "ready" and not force:
        raise BadRequest(
            f"node {node.ID} is not down and can't be removed; stop its agent first or use --force"
        )
    await mgr.remove_node(node)
    return web.Response(status=200)


ROUTES = [
    Route("GET", "/nodes", list_nodes, "manager", query=(filter_query(FILTERS),)),
    Route("GET", "/nodes/{id}", inspect_node, "manager"),
    Route("POST", "/nodes/{id}/update", update_node, "manager", body=NodeSpec, query=(VERSION,)),
    Route("DELETE", "/nodes/{id}", remove_node, "manager", query=(flag("force", "remove a node that is not down"),)),
]
