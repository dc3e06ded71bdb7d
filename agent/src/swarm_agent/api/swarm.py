"""``/swarm``: init, join and leave act on this node; inspect and update act on the cluster."""

from aiohttp import web

from .. import tokens
from ..manager.ca import RootCA
from ..manager.keys import format_unlock_key, new_key
from ..store.etcd import op_delete, op_put
from ..store.state import UNLOCK_KEY
from ..store.state import Conflict as StoreConflict
from .app import VERSION, Route, flag, agent_of, json_response, query_bool, query_version, read_body
from .errors import BadRequest, Conflict
from .models import InitRequest, JoinRequest, JoinTokenPair, SwarmSpec, UnlockRequest, now


async def init_swarm(request: web.Request) -> web.Response:
    req: InitRequest = await read_body(request, "swarm init request")
    node_id = await agent_of(request).init(req)
    return json_response(node_id)


async def join_swarm(request: web.Request) -> web.Response:
    req: JoinRequest = await read_body(request, "swarm join request")
    await agent_of(request).join(req)
    return web.Response(status=200)


async def leave_swarm(request: web.Request) -> web.Response:
    await agent_of(request).leave(force=query_bool(request, "force"))
    return web.Response(status=200)


async def inspect_swarm(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    cluster = await mgr.store.get_cluster()
    assert cluster is not None, "a manager always has a cluster record"
    cluster.JoinTokens = await mgr.join_tokens()
    return json_response(cluster.wire())


async def update_swarm(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    version = query_version(request)
    rotate_worker = query_bool(request, "rotateWorkerToken")
    rotate_manager = query_bool(request, "rotateManagerToken")
    rotate_unlock = query_bool(request, "rotateManagerUnlockKey")
    spec: SwarmSpec = await read_body(request, "swarm spec")
    cluster = await mgr.store.get_cluster()
    assert cluster is not None, "a manager always has a cluster record"
    autolock, had_autolock = spec.EncryptionConfig.AutoLockManagers, cluster.Spec.EncryptionConfig.AutoLockManagers
    if rotate_unlock and not autolock:
        raise BadRequest("rotateManagerUnlockKey: autolock is off, so there is no unlock key to rotate")
    # Every manager re-seals its copy of the data key when this record changes (Manager._keep_key_file).
    unlock_ops = []
    if autolock and (rotate_unlock or not had_autolock):
        unlock_ops.append(op_put(UNLOCK_KEY, mgr.seal_unlock_key(new_key())))
    elif had_autolock and not autolock:
        unlock_ops.append(op_delete(UNLOCK_KEY))
    ca = spec.CAConfig
    if ca.ExternalCAs:
        raise BadRequest("CAConfig.ExternalCAs: external CAs are not available in this cluster")
    ca_ops = []
    new_root = _requested_root(spec, cluster.Spec.CAConfig.ForceRotate)
    if new_root is not None:
        authority = (await mgr.refresh_authority()).rotate_to(new_root)
        ca_ops.append(mgr.authority_op(authority))
        cluster.RootRotationInProgress = True
        cluster.TLSInfo = authority.tls_info()
    # The signing key is never kept in the spec, as Docker does not show it again.
    spec.CAConfig.SigningCACert = spec.CAConfig.SigningCAKey = None
    cluster.Version.Index = version
    cluster.Spec = spec
    cluster.UpdatedAt = now()
    join_tokens = await mgr.join_tokens()
    if rotate_worker:
        join_tokens.Worker = tokens.new_token(mgr.root_ca.cert_pem)
    if rotate_manager:
        join_tokens.Manager = tokens.new_token(mgr.root_ca.cert_pem)
    # Kept sealed beside the cluster record (which a swarm from before sealing held them in).
    cluster.JoinTokens = JoinTokenPair()
    try:
        await mgr.store.put_cluster(cluster, also=[*unlock_ops, *ca_ops, mgr.join_tokens_op(join_tokens)])
    except StoreConflict:
        raise Conflict(f"update out of sequence: the swarm was changed since version {version}") from None
    mgr.log_event("swarm updated", rotated_worker_token=rotate_worker, rotated_manager_token=rotate_manager,
                  autolock=autolock, new_unlock_key=bool(unlock_ops) and autolock,
                  root_rotation_to=new_root.digest if new_root else None)
    return web.Response(status=200)


def _requested_root(spec: SwarmSpec, force_rotate: int) -> RootCA | None:
    """The root a swarm update rotates to: the one given (validated), or a new one when ForceRotate changed;
    None when the update asks for no rotation."""
    ca = spec.CAConfig
    if bool(ca.SigningCACert) != bool(ca.SigningCAKey):
        missing = "SigningCAKey" if ca.SigningCACert else "SigningCACert"
        raise BadRequest(f"Spec.CAConfig.{missing}: SigningCACert and SigningCAKey must be given together")
    if ca.SigningCACert and ca.SigningCAKey:
        try:
            return RootCA.from_pem(ca.SigningCACert.encode(), ca.SigningCAKey.encode())
        except ValueError as exc:
            field = "SigningCAKey" if str(exc).startswith("signing CA key") else "SigningCACert"
            raise BadRequest(f"Spec.CAConfig.{field}: {exc}") from None
    if ca.ForceRotate != force_rotate:
        return RootCA.generate()
    return None


async def unlock_key(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    key = mgr.unlock_key()
    return json_response({"UnlockKey": format_unlock_key(key) if key else ""})


async def unlock_swarm(request: web.Request) -> web.Response:
    req: UnlockRequest = await read_body(request, "unlock request")
    await agent_of(request).unlock(req.UnlockKey)
    return web.Response(status=200)


ROUTES = [
    Route("POST", "/swarm/init", init_swarm, "local", body=InitRequest),
    Route("POST", "/swarm/join", join_swarm, "local", body=JoinRequest),
    Route("POST", "/swarm/leave", leave_swarm, "local", query=(flag("force", "leave even as the last manager"),)),
    Route("GET", "/swarm", inspect_swarm, "manager"),
    Route("POST", "/swarm/update", update_swarm, "manager", body=SwarmSpec,
          query=(VERSION, flag("rotateWorkerToken"), flag("rotateManagerToken"), flag("rotateManagerUnlockKey"))),
    Route("GET", "/swarm/unlockkey", unlock_key, "manager"),
    Route("POST", "/swarm/unlock", unlock_swarm, "local", body=UnlockRequest),
]
