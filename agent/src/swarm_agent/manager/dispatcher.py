"""The dispatcher: joins, worker sessions, heartbeats, assignments and status reports (``/swarmd/``).

Every manager serves it. A node is alive while its session key
``/swarm/sessions/<node id>`` exists; the manager that holds the session
notes heartbeats in memory and deletes the key when they stop (see
``sessions.py``), so the leader sees the node go quiet whichever manager it
talks to.
"""

import asyncio
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiohttp import web
from pydantic import BaseModel, Field

from .. import tokens
from ..api.app import Route, agent_of, caller_of, json_response, read_body
from ..api.errors import ApiError, BadRequest, Forbidden, NotFound
from ..api.models import Node, NodeDescription, NodeSpec, NodeStatus, Task, TaskState, TaskStatus, TLSInfoSpec, now
from ..api.secrets import referenced
from ..store.state import DOWN_REPORTS, Conflict, TaskForms
from .allocator import swarm_network_object
from .rotation import issuer_info
from .sessions import SessionExpired

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger(__name__)

class JoinBody(BaseModel):
    token: str = Field(min_length=1)
    csr: str = Field(min_length=1)
    hostname: str = ""
    advertise_addr: str = ""  # empty: the address the request came from
    availability: str = "active"


class RenewBody(BaseModel):
    csr: str = Field(min_length=1)
    role: Literal["manager", "worker"]  # the role the node asks for; refused if the swarm wants another


class SessionBody(BaseModel):
    description: NodeDescription


class HeartbeatBody(BaseModel):
    session: int = Field(gt=0, le=2**63 - 1)  # the ID the session was opened with


class StatusUpdate(BaseModel):
    ID: str
    Status: TaskStatus


class StatusBody(BaseModel):
    updates: list[StatusUpdate]
    down: list[str] = Field(default_factory=list, max_length=1000)  # nodes gossip found dead

# A report that a node is dead counts this long (seconds): long enough for a second node's report to arrive.
DOWN_REPORT_TTL = 10


def manager_of(request: web.Request) -> "Manager":
    return agent_of(request).require_manager()


def node_of(request: web.Request) -> str:
    identity = caller_of(request).identity
    if identity is None:
        raise Forbidden("worker routes need the node's certificate")
    return identity.node_id


async def get_ca(request: web.Request) -> web.Response:
    return json_response({"ca": manager_of(request).root_ca.cert_pem.decode()})


async def join(request: web.Request) -> web.Response:
    mgr = manager_of(request)
    body: JoinBody = await read_body(request, "join request")
    join_tokens = await mgr.join_tokens()
    try:
        presented = tokens.parse_token(body.token)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if presented.digest != mgr.root_ca.digest:
        raise Forbidden("the join token was not issued for this swarm's root CA")
    if tokens.same_secret(body.token, join_tokens.Manager):
        role = "manager"
    elif tokens.same_secret(body.token, join_tokens.Worker):
        role = "worker"
    else:
        raise Forbidden("invalid join token: it does not match this swarm's current worker or manager token")
    if body.availability not in ("active", "pause", "drain"):
        raise BadRequest(f"invalid availability {body.availability!r}")
    peer_ip = request.transport.get_extra_info("peername")[0] if request.transport else ""
    result = await mgr.admit(
        role=role,
        csr_pem=body.csr.encode(),
        hostname=body.hostname,
        advertise_addr=body.advertise_addr or peer_ip,
        availability=body.availability,
    )
    return json_response(result)


async def renew(request: web.Request) -> web.Response:
    """A fresh certificate for a node in the role its spec names: renewal keeps the role, promotion and demotion change it.

    The node says which role it asks for, so a renewal that crosses a role
    change is refused rather than handing out a role the node is not ready to take.
    """
    mgr = manager_of(request)
    node_id = node_of(request)
    body: RenewBody = await read_body(request, "certificate request")
    node = await mgr.store.get(Node, node_id)
    if node is None:
        raise NotFound(f"node {node_id} is not part of this swarm")
    role = node.Spec.Role
    if body.role != role:
        raise ApiError(f"role: node {node_id} is to be a {role} now, not a {body.role}", status=409)
    result = await mgr.issue(body.csr.encode(), node_id=node_id, role=role, ip=node.Status.Addr)
    if role == "manager" and caller_of(request).role == "worker":
        result["etcd_initial_cluster"] = await mgr.add_member(node_id, node.Status.Addr)
    log.info("issued a %s certificate to node %s (its current one has serial %x)", role, node_id,
             caller_of(request).identity.serial)
    return json_response(result)


async def open_session(request: web.Request) -> web.Response:
    mgr = manager_of(request)
    node_id = node_of(request)
    body: SessionBody = await read_body(request, "session request")
    peer_ip = request.transport.get_extra_info("peername")[0] if request.transport else ""
    period = await mgr.heartbeat_period()
    session = await mgr.sessions.open(node_id, peer_ip, period)
    for _ in range(5):
        node = await mgr.store.get(Node, node_id)
        if node is None:
            raise NotFound(f"node {node_id} is not part of this swarm")
        description = body.description.model_copy()
        description.TLSInfo = _tls_info(mgr, request, body.description)
        status = NodeStatus(State="ready", Addr=node.Status.Addr or peer_ip)
        if node.Description == description and node.Status == status:
            # A node back with nothing new (another manager, a new connection): a write would still move the
            # nodes' stamp and have the leader reconcile every service, at every one of a thousand reconnections.
            break
        node.Description, node.Status = description, status
        node.UpdatedAt = now()
        try:
            await mgr.store.update(node)
            break
        except Conflict:
            continue
    log.info("node %s opened a session with manager %s (session %x, certificate serial %x)",
             node_id, mgr.node_id, session, caller_of(request).identity.serial)
    return json_response({"session": session, "heartbeat_period": period, "managers": mgr.manager_addrs()})


def _tls_info(mgr: "Manager", request: web.Request, description: NodeDescription) -> TLSInfoSpec | None:
    """The node's TLSInfo: the roots it says it trusts, and the issuer of the certificate it presents here
    (which the node cannot misstate)."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    leaf = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    issuer = mgr.authority.issuer_of(leaf) if leaf else None
    if issuer is None:
        return None
    trust = description.TLSInfo.TrustRoot if description.TLSInfo else ""
    return issuer_info(trust.encode(), issuer)


async def heartbeat(request: web.Request) -> web.Response:
    mgr = manager_of(request)
    node_id = node_of(request)
    body: HeartbeatBody = await read_body(request, "heartbeat")
    period = await mgr.heartbeat_period()
    try:
        # Only the caller's own session: another node's would be kept alive by a node with no business doing so.
        await mgr.sessions.heartbeat(node_id, body.session, period)
    except SessionExpired as exc:
        raise ApiError(str(exc), status=410) from None
    authority = mgr.authority
    return json_response({"heartbeat_period": period, "trust_root": authority.trust_pem.decode(),
                          "issuer": authority.signer.cert_pem.decode()})


async def leave(request: web.Request) -> web.Response:
    """A node leaving the swarm ends its session now, so it shows Down at once rather than when it would expire."""
    mgr = manager_of(request)
    node_id = node_of(request)
    await mgr.sessions.end(node_id)
    log.info("node %s left the swarm", node_id)
    return json_response({})


def _values(mgr: "Manager", tasks: list[Task]) -> dict[str, dict[str, str]]:
    """The values (base64) of the secrets and configs that the node's live tasks use, and of no others."""
    state = mgr.cache.state
    out: dict[str, dict[str, str]] = {"secret": {}, "config": {}}
    for task in tasks:
        if task.Status.State.terminal or task.DesiredState.rank > TaskState.COMPLETE.rank:
            continue
        for kind, ids in referenced(task.Spec.ContainerSpec).items():
            table = state.secrets if kind == "secret" else state.configs
            for obj_id in ids:
                if obj_id in table and obj_id not in out[kind]:
                    try:
                        out[kind][obj_id] = mgr.value_for_node(kind, obj_id, table[obj_id].Sealed)
                    except ApiError as exc:
                        # The node rejects the task for want of the value; the others still get theirs.
                        log.error("%s %s not sent to a node: %s", kind, obj_id, exc.message)
    return out


def _assignment(mgr: "Manager", node_id: str) -> tuple[dict[str, Any], list[TaskForms]]:
    """The node's assignment: its tasks, and everything else it needs, apart."""
    state = mgr.cache.state
    node_tasks = [state.tasks[t] for t in sorted(state.tasks_by_node.get(node_id, ())) if t in state.tasks]
    forms = [state.task_forms(t) for t in node_tasks]
    tasks = [f.wire for f in forms]
    node = state.nodes.get(node_id)
    services = {t["ServiceID"]: state.services[t["ServiceID"]].Spec.Name for t in tasks if t["ServiceID"] in state.services}
    networks = [
        {"Network": swarm_network_object(state.networks[net_id]), "Address": ip}
        for net_id, ip in sorted(state.node_networks.get(node_id, {}).items())
        if net_id in state.networks
    ]
    return {
        "services": services,
        "endpoints": {sid: state.services[sid].Endpoint.wire() for sid in services},
        "networks": networks,
        "gossip": {"keys": state.gossip_keys},
        "managers": mgr.manager_addrs(),
        "node": (node.Spec if node else NodeSpec()).wire(),
        "logs": [s.wire() for _, s in sorted(state.log_subscriptions.items()) if s.concerns(node_id, node_tasks)],
        **_values(mgr, node_tasks),
    }, forms


def _encoded(rest: dict[str, Any], tasks: list[TaskForms]) -> tuple[bytes, str]:
    """The assignment's line, and a digest of what the node acts on.

    The digest leaves out what changes each time the node reports a task's progress: a node needs its tasks'
    specs, desired states and whether the managers hold a task as ended; echoing every state it reported itself
    (accepted, preparing, starting, running) back to it was most of a busy manager's work, as SwarmKit's
    dispatcher also found (it compares tasks without their status). The tasks' JSON is each task's own, made
    once per version."""
    rest_json = json.dumps(rest, sort_keys=True)
    digest = hashlib.sha256("\n".join([rest_json, *(t.acted_on for t in tasks)]).encode()).hexdigest()
    line = '{"tasks": [' + ", ".join(t.json for t in tasks) + "], " + rest_json[1:] + "\n"
    return line.encode(), digest


async def assignments(request: web.Request) -> web.StreamResponse:
    """A stream of the node's full assignment set, one JSON document per line, sent whenever it changes."""
    mgr = manager_of(request)
    node_id = node_of(request)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    last_digest = ""
    last_stamp: tuple[int, int] | None = None
    period = await mgr.heartbeat_period()
    loop = asyncio.get_running_loop()
    last_write = 0.0
    try:
        # A node removed meanwhile loses its stream; its next request is refused at the door. So does a node whose
        # session this manager no longer holds (it fell silent, left, or gossip found it dead): the stream's end
        # tells the node to open a new session, which its heartbeats alone might never tell it.
        while mgr.running and node_id not in mgr.cache.state.removed and node_id in mgr.sessions.held:
            stamp = mgr.cache.state.assignment_stamp(node_id)
            # Most changes concern other nodes: recompute only when this node's inputs moved.
            if stamp != last_stamp:
                last_stamp = stamp
                line, digest = _encoded(*_assignment(mgr, node_id))
                if digest != last_digest:
                    await response.write(line)
                    last_digest, last_write = digest, loop.time()
            if loop.time() - last_write >= period:
                # An empty line now and then tells both ends the stream is alive.
                await response.write(b"\n")
                last_write = loop.time()
            await mgr.cache.wait_assignment_change(node_id, stamp, timeout=period)
        if mgr.running and node_id not in mgr.sessions.held:
            log.info("node %s: its session with manager %s ended, and its assignment stream with it",
                     node_id, mgr.node_id)
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        log.info("node %s closed its assignment stream", node_id)
    return response


def _changes(mgr: "Manager", node_id: str, wanted: dict[str, TaskStatus]) -> list[Task]:
    """The tasks moved to the states ``node_id`` reported, leaving out states older than the stored one.

    Each keeps the revision it was read at, so its write fails if the task moved since (see ``TaskWrites``)."""
    changes = []
    for task_id, status in wanted.items():
        task = mgr.cache.state.tasks.get(task_id)
        if task is None:
            continue
        task = mgr.task_writes.latest(task)
        if task.NodeID != node_id:
            raise Forbidden(f"task {task_id} is not assigned to node {node_id}")
        if status.State.rank < task.Status.State.rank or status == task.Status:
            continue
        changed = task.model_copy()
        changed.Version = task.Version.model_copy()  # the write sets its new index: not the cached task's
        changed.Status = status
        changed.UpdatedAt = now()
        changes.append(changed)
    return changes


async def report_status(request: web.Request) -> web.Response:
    """Record what a worker observed; a task's state never moves backwards, and only its own node may report it.

    The whole report is checked before anything is written, and written with other nodes' reports in few
    transactions (``TaskWrites``); the answer comes once it is stored."""
    mgr = manager_of(request)
    node_id = node_of(request)
    body: StatusBody = await read_body(request, "status report")
    wanted = {update.ID: update.Status for update in body.updates}
    accepted = 0
    for _ in range(5):
        changes = _changes(mgr, node_id, wanted)
        if not changes:
            break
        written = await mgr.task_writes.write(changes)
        for task, ok in zip(changes, written):
            if ok:
                accepted += 1
                log.info("task %s on node %s is %s %s", task.ID, node_id, task.Status.State.value, task.Status.Err or "")
        wanted = {task.ID: task.Status for task, ok in zip(changes, written) if not ok}
        if not wanted:
            break
        # Our cache was behind for these: read them afresh and decide again.
        await mgr.cache.barrier()
    for dead in body.down:
        if dead != node_id and dead in mgr.cache.state.nodes:
            lease = await mgr.store.etcd.lease_grant(DOWN_REPORT_TTL)
            await mgr.store.put_json(f"{DOWN_REPORTS}{dead}/{node_id}", {"at": now()}, lease=lease)
            log.warning("node %s reports node %s dead (gossip)", node_id, dead)
    return json_response({"accepted": accepted})


ROUTES = [
    Route("GET", "/swarmd/ca", get_ca, "public"),
    Route("POST", "/swarmd/join", join, "public", body=JoinBody),
    Route("POST", "/swarmd/renew", renew, "node", body=RenewBody),
    Route("POST", "/swarmd/session", open_session, "node", body=SessionBody),
    Route("POST", "/swarmd/heartbeat", heartbeat, "node", body=HeartbeatBody),
    Route("GET", "/swarmd/assignments", assignments, "node"),
    Route("POST", "/swarmd/status", report_status, "node", body=StatusBody),
    Route("POST", "/swarmd/leave", leave, "node"),
]
