"""``/swarm``: init, join and leave act on this node; inspect and update act on the cluster."""

from aiohttp import web

from .. import tokens
from ..store.state import Conflict as StoreConflict
from .app import Route, agent_of, json_response, query_bool, query_version, read_model
from .errors import BadRequest, Conflict
from .models import InitRequest, JoinRequest, SwarmSpec, now


async def init_swarm(request: web.Request) -> web.Response:
    req: InitRequest = await read_model(request, InitRequest, "swarm init request")
    node_id = await agent_of(request).init(req)
    return json_response(node_id)


async def join_swarm(request: web.Request) -> web.Response:
    req: JoinRequest = await read_model(request, JoinRequest, "swarm join request")
    await agent_of(request).join(req)
    return web.Response(status=200)


async def leave_swarm(request: web.Request) -> web.Response:
    await agent_of(request).leave(force=query_bool(request, "force"))
    return web.Response(status=200)


async def inspect_swarm(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    cluster = await mgr.store.get_cluster()
    assert cluster is not None, "a manager always has a cluster record"
    return json_response(cluster.wire())


async def update_swarm(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    version = query_version(request)
    rotate_worker = query_bool(request, "rotateWorkerToken")
    rotate_manager = query_bool(request, "rotateManagerToken")
    if query_bool(request, "rotateManagerUnlockKey"):
        raise BadRequest("rotateManagerUnlockKey: autolock is not available in this cluster")
    spec: SwarmSpec = await read_model(request, SwarmSpec, "swarm spec")
    cluster = await mgr.store.get_cluster()
    assert cluster is not None, "a manager always has a cluster record"
    if spec.EncryptionConfig.AutoLockManagers:
        raise BadRequest("EncryptionConfig.AutoLockManagers: autolock is not available in this cluster")
    ca = spec.CAConfig
    if ca.SigningCACert or ca.SigningCAKey or ca.ForceRotate != cluster.Spec.CAConfig.ForceRotate:
        raise BadRequest("CAConfig: root CA rotation is not available in this cluster")
    if ca.ExternalCAs:
        raise BadRequest("CAConfig.ExternalCAs: external CAs are not available in this cluster")
    cluster.Version.Index = version
    cluster.Spec = spec
    cluster.UpdatedAt = now()
    if rotate_worker:
        cluster.JoinTokens.Worker = tokens.new_token(mgr.root_ca.cert_pem)
    if rotate_manager:
        cluster.JoinTokens.Manager = tokens.new_token(mgr.root_ca.cert_pem)
    try:
        await mgr.store.put_cluster(cluster)
    except StoreConflict:
        raise Conflict(f"update out of sequence: the swarm was changed since version {version}") from None
    mgr.log_event("swarm updated", rotated_worker_token=rotate_worker, rotated_manager_token=rotate_manager)
    return web.Response(status=200)


ROUTES = [
    Route("POST", "/swarm/init", init_swarm, "local"),
    Route("POST", "/swarm/join", join_swarm, "local"),
    Route("POST", "/swarm/leave", leave_swarm, "local"),
    Route("GET", "/swarm", inspect_swarm, "manager"),
    Route("POST", "/swarm/update", update_swarm, "manager"),
]
