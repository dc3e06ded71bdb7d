"""Typed tables in etcd, written with compare-and-swap, and a watched cache of them.

Layout (every key under ``/swarm/`` so one watch sees every change):

- ``/swarm/cluster``               the Swarm object (spec, join tokens, TLS info)
- ``/swarm/ca``                    the signing CA: certificate, and key sealed with the data key
- ``/swarm/join-tokens``           the join tokens, sealed with the data key (the cluster record holds none)
- ``/swarm/services/<id>``         Service; ``/swarm/names/services/<name>`` -> id keeps names unique,
  ``/swarm/ports/ingress/<proto>/<port>`` -> id keeps published ingress ports unique
- ``/swarm/tasks/<id>``            Task
- ``/swarm/networks/<id>``         Network; ``/swarm/names/networks/<name>``, ``/swarm/ipam/subnets/<subnet>`` and
  ``/swarm/ipam/vni/<vni>`` -> id keep names, subnets and VXLAN IDs unique
- ``/swarm/ipam/addrs/<network id>/<ip>`` -> owner (``vip:<service>``, ``task:<task>``, ``node:<node>``): one
  key per address in use, so an address is handed out once; a service's VIPs are claimed with the service
- ``/swarm/nodes/<id>``            Node
- ``/swarm/secrets/<id>``, ``/swarm/configs/<id>``  Secret and Config, values sealed with the data key (never
  in the clear); ``/swarm/names/secrets/<name>`` and ``/swarm/names/configs/<name>`` -> id keep names unique
- ``/swarm/unlock-key``            the autolock unlock key, sealed with the data key; absent without autolock
- ``/swarm/sessions/<node id>``    a worker's live session, held by a lease the dispatcher renews
- ``/swarm/managers/<node id>``    a manager's API and etcd addresses, held by that manager's lease
- ``/swarm/leader``                the leader's node ID, held by the leader's lease
- ``/swarm/gossip``                the gossip keyring (managers hand it out with assignments)
- ``/swarm/down-reports/<node>/<reporter>``  gossip found <node> dead, says <reporter>; short-lived lease
- ``/swarm/logs/<subscription id>``  a ``docker service logs`` in progress (SubscriptionMessage), held by the
  lease of the manager serving the client; workers learn of it with their assignments

An object's ``Version.Index`` is its key's etcd ``mod_revision``: an update
sends back the version it read and fails with :class:`Conflict` if anybody
wrote in between, exactly as Docker's ``?version=`` parameter promises.
"""

import asyncio
import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..api.models import Config, Network, Node, Secret, Service, SubscriptionMessage, Swarm, Task, Wire
from .etcd import (
    CompactedError,
    EtcdClient,
    EtcdError,
    KeyValue,
    WatchEvent,
    cmp_absent,
    cmp_mod,
    guard_holds,
    op_delete,
    op_delete_prefix,
    op_put,
    op_read_guarded,
)

log = logging.getLogger(__name__)

ROOT = "/swarm/"
CLUSTER_KEY = ROOT + "cluster"
CA_KEY = ROOT + "ca"
ETCD_CA_KEY = ROOT + "etcd-ca"
LEADER_KEY = ROOT + "leader"
SESSIONS = ROOT + "sessions/"
MANAGERS = ROOT + "managers/"
SERVICE_NAMES = ROOT + "names/services/"
INGRESS_PORTS = ROOT + "ports/ingress/"
NETWORK_NAMES = ROOT + "names/networks/"
SUBNETS = ROOT + "ipam/subnets/"
VNIS = ROOT + "ipam/vni/"
ADDRS = ROOT + "ipam/addrs/"
GOSSIP_KEY = ROOT + "gossip"
UNLOCK_KEY = ROOT + "unlock-key"
JOIN_TOKENS = ROOT + "join-tokens"
SECRET_NAMES = ROOT + "names/secrets/"
CONFIG_NAMES = ROOT + "names/configs/"
DOWN_REPORTS = ROOT + "down-reports/"
# IDs of removed nodes, kept for good: their certificates stay valid until they expire and must be refused.
REMOVED = ROOT + "removed/"
LOG_SUBSCRIPTIONS = ROOT + "logs/"

TABLES: dict[type, str] = {
    Service: ROOT + "services/", Task: ROOT + "tasks/", Node: ROOT + "nodes/", Network: ROOT + "networks/",
    Secret: ROOT + "secrets/", Config: ROOT + "configs/",
}
# etcd (--max-txn-ops, default 128) refuses a transaction with more than this many compares, or success
# operations, or failure operations: each list counts on its own.
MAX_TXN_OPS = 128
MAX_TXN_BYTES = 1024 * 1024  # of values written in one transaction (base64, as sent)

M = TypeVar("M", bound=Wire)
GuardedOp = tuple[dict[str, Any], dict[str, Any]]
"""A compare and the operation it guards, in the etcd gateway's shape."""

_STAMPS = itertools.count(1)
# How many watch events the cache applies before letting other work run (between two revisions).
YIELD_EVERY = 200


class Conflict(Exception):
    """Somebody else wrote the object since it was read."""


class NameConflict(Conflict):
    pass


class PortConflict(Conflict):
    pass


class AddressConflict(Conflict):
    """A subnet, VXLAN ID or address is held by another object."""


def key_of(obj: Wire) -> str:
    return TABLES[type(obj)] + obj.ID  # type: ignore[attr-defined]


def address_key(network_id: str, ip: str) -> str:
    return f"{ADDRS}{network_id}/{ip}"


def subnet_key(subnet: str) -> str:
    return SUBNETS + subnet.replace("/", "_")


def service_claims(service: Service) -> dict[str, str]:
    """The keys a service holds so that no other may take them: its name, published ingress ports and VIPs."""
    claims = {SERVICE_NAMES + service.Spec.Name: service.ID}
    for port in service.Endpoint.Ports or []:
        if port.PublishMode == "ingress" and port.PublishedPort:
            claims[f"{INGRESS_PORTS}{port.Protocol}/{port.PublishedPort}"] = service.ID
    for vip in service.Endpoint.VirtualIPs or []:
        claims[address_key(vip.NetworkID, vip.Addr.split("/")[0])] = f"vip:{service.ID}"
    return claims


def network_claims(network: Network) -> dict[str, str]:
    return {
        NETWORK_NAMES + network.Spec.Name: network.ID,
        subnet_key(network.Subnet): network.ID,
        f"{VNIS}{network.VNI}": network.ID,
    }


def claims_of(obj: Wire) -> dict[str, str]:
    if isinstance(obj, Service):
        return service_claims(obj)
    if isinstance(obj, Network):
        return network_claims(obj)
    if isinstance(obj, Secret):
        return {SECRET_NAMES + obj.Spec.Name: obj.ID}
    if isinstance(obj, Config):
        return {CONFIG_NAMES + obj.Spec.Name: obj.ID}
    return {}


def decode(model: type[M], kv: KeyValue) -> M:
    obj = model.model_validate_json(kv.value)
    obj.Version.Index = kv.mod_revision  # type: ignore[attr-defined]
    return obj


def encode(obj: Wire) -> str:
    return obj.model_dump_json(exclude_none=True)


def _guarded_put(obj: Wire) -> GuardedOp:
    """Write ``obj`` only if its key is still at the revision it was read at."""
    return cmp_mod(key_of(obj), obj.Version.Index), op_put(key_of(obj), encode(obj))  # type: ignore[attr-defined]


def _chunks(ops: Sequence[GuardedOp]) -> list[range]:
    """Split guarded operations into transactions etcd accepts: at most MAX_TXN_OPS of them, and requests well
    below etcd's default --max-request-bytes (1.5 MiB) however large the objects written."""
    chunks: list[range] = []
    start = size = 0
    for i, (_, op) in enumerate(ops):
        op_size = len((op.get("request_put") or {}).get("value", ""))
        if i > start and (i - start >= MAX_TXN_OPS or size + op_size > MAX_TXN_BYTES):
            chunks.append(range(start, i))
            start, size = i, 0
        size += op_size
    if start < len(ops):
        chunks.append(range(start, len(ops)))
    return chunks


class Store:
    """CRUD on the typed tables; every write is a compare-and-swap."""

    def __init__(self, etcd: EtcdClient) -> None:
        self.etcd = etcd

    async def get(self, model: type[M], obj_id: str) -> M | None:
        kv = await self.etcd.get(TABLES[model] + obj_id)
        return decode(model, kv) if kv else None

    async def list(self, model: type[M]) -> list[M]:
        kvs, _ = await self.etcd.get_prefix(TABLES[model])
        return [decode(model, kv) for kv in kvs]

    async def get_cluster(self) -> Swarm | None:
        kv = await self.etcd.get(CLUSTER_KEY)
        return decode(Swarm, kv) if kv else None

    async def put_cluster(self, cluster: Swarm, create: bool = False, also: Sequence[dict[str, Any]] = ()) -> Swarm:
        """Write the cluster record, and ``also`` these operations with it (the sealed unlock key)."""
        guard = cmp_absent(CLUSTER_KEY) if create else cmp_mod(CLUSTER_KEY, cluster.Version.Index)
        ok, rev, _ = await self.etcd.txn([guard], [op_put(CLUSTER_KEY, encode(cluster)), *also])
        if not ok:
            raise Conflict("the swarm was updated by somebody else; read it again")
        cluster.Version.Index = rev
        return cluster

    async def create(self, obj: M) -> M:
        """Create a new object with its claims (see ``claims_of``) in the same transaction."""
        key = key_of(obj)
        claims = claims_of(obj)
        compare = [cmp_absent(key), *(cmp_absent(k) for k in claims)]
        success = [op_put(key, encode(obj)), *(op_put(k, v) for k, v in claims.items())]
        ok, rev, _ = await self.etcd.txn(compare, success)
        if not ok:
            await self._explain_claim_conflict(obj, claims)
            raise Conflict(f"{type(obj).__name__.lower()} {obj.ID} already exists")  # type: ignore[attr-defined]
        obj.Version.Index = rev  # type: ignore[attr-defined]
        return obj

    async def update(self, obj: M, previous: M | None = None) -> M:
        """Write ``obj`` if nobody changed it since its ``Version.Index`` was read.

        For a service, ``previous`` is the version being replaced: claims it
        no longer needs (an old name, freed ports) are released, new ones taken.
        """
        key = key_of(obj)
        compare = [cmp_mod(key, obj.Version.Index)]  # type: ignore[attr-defined]
        success = [op_put(key, encode(obj))]
        claims: dict[str, str] = {}
        if isinstance(obj, Service) and isinstance(previous, Service):
            claims, held = service_claims(obj), service_claims(previous)
            compare += [cmp_absent(k) for k in claims if k not in held]
            success += [op_put(k, v) for k, v in claims.items() if k not in held]
            success += [op_delete(k) for k in held if k not in claims]
        ok, rev, _ = await self.etcd.txn(compare, success)
        if not ok:
            await self._explain_claim_conflict(obj, claims)
            raise Conflict(
                f"update out of sequence: {type(obj).__name__.lower()} {obj.ID} "  # type: ignore[attr-defined]
                f"was changed since version {obj.Version.Index}"  # type: ignore[attr-defined]
            )
        obj.Version.Index = rev  # type: ignore[attr-defined]
        return obj

    async def _explain_claim_conflict(self, obj: Wire, claims: dict[str, str]) -> None:
        """Say which claim another service holds, if that is why a write failed."""
        for claim, owner_id in claims.items():
            current = await self.etcd.get(claim)
            if current is None or current.value.decode() == owner_id:
                continue
            holder = current.value.decode()
            if claim.startswith(SERVICE_NAMES):
                raise NameConflict(f"service {claim[len(SERVICE_NAMES):]} already exists")
            if claim.startswith(NETWORK_NAMES):
                raise NameConflict(f"network with name {claim[len(NETWORK_NAMES):]} already exists")
            for names, kind in ((SECRET_NAMES, "secret"), (CONFIG_NAMES, "config")):
                if claim.startswith(names):
                    raise NameConflict(f"{kind} {claim[len(names):]} already exists")
            if claim.startswith(SUBNETS):
                raise AddressConflict(f"subnet {claim[len(SUBNETS):].replace('_', '/')} is used by network {holder}")
            if claim.startswith(VNIS):
                raise AddressConflict(f"VXLAN ID {claim[len(VNIS):]} is used by network {holder}")
            if claim.startswith(ADDRS):
                raise AddressConflict(f"address {claim.rsplit('/', 1)[1]} is in use ({holder})")
            proto, port = claim[len(INGRESS_PORTS):].split("/")
            raise PortConflict(f"port '{port}/{proto}' is already in use by service {holder} as an ingress port")

    async def delete(self, obj: Wire, check_version: bool = True) -> None:
        key = key_of(obj)
        compare = [cmp_mod(key, obj.Version.Index)] if check_version else []  # type: ignore[attr-defined]
        success = [op_delete(key), *(op_delete(k) for k in claims_of(obj))]
        if isinstance(obj, Network):
            # Whatever still holds an address of it (tasks that ended, nodes) lets go with it.
            success.append(op_delete_prefix(f"{ADDRS}{obj.ID}/"))
        ok, _, _ = await self.etcd.txn(compare, success)
        if not ok:
            raise Conflict(f"{type(obj).__name__.lower()} {obj.ID} changed while being removed")  # type: ignore[attr-defined]

    async def ingress_ports(self) -> dict[tuple[str, int], str]:
        """Published ingress ports in use: (protocol, port) -> service ID."""
        kvs, _ = await self.etcd.get_prefix(INGRESS_PORTS)
        taken = {}
        for kv in kvs:
            proto, port = kv.key[len(INGRESS_PORTS):].split("/")
            taken[(proto, int(port))] = kv.value.decode()
        return taken

    async def apply(
        self, creates: Iterable[Wire] = (), updates: Iterable[Wire] = (), deletes: Iterable[Wire] = ()
    ) -> int:
        """Write many objects, each guarded by its own revision.

        Batched into few transactions; a stale object does not hold back
        the rest. Returns how many writes were refused as stale.
        """
        ops: list[GuardedOp] = []
        for obj in creates:
            ops.append((cmp_absent(key_of(obj)), op_put(key_of(obj), encode(obj))))
        ops += [_guarded_put(obj) for obj in updates]
        for obj in deletes:
            ops.append((cmp_mod(key_of(obj), obj.Version.Index), op_delete(key_of(obj))))  # type: ignore[attr-defined]
        return len(await self._guarded(ops))

    async def update_each(self, objs: Sequence[Wire]) -> set[int]:
        """Write each object if nobody changed it since its ``Version.Index`` was read, in as few transactions
        as etcd allows; returns the indexes of the objects refused as stale. The others are written, and their
        ``Version.Index`` is now the revision that wrote them."""
        revisions: dict[int, int] = {}
        refused = await self._guarded([_guarded_put(obj) for obj in objs], revisions)
        for i, revision in revisions.items():
            objs[i].Version.Index = revision  # type: ignore[attr-defined]
        return refused

    async def _guarded(self, ops: Sequence[GuardedOp], revisions: dict[int, int] | None = None) -> set[int]:
        """Run (guard, op) pairs in few transactions. A transaction whose guards do not all hold reads the
        guarded keys instead, so it tells which pairs are stale; the others go again without them at once
        (not one transaction per pair). Returns the indexes of the refused pairs; ``revisions`` gets the
        revision that wrote each of the others."""
        refused: set[int] = set()
        for chunk in _chunks(ops):
            pending = list(chunk)
            while pending:
                guards = [ops[i][0] for i in pending]
                ok, revision, responses = await self.etcd.txn(
                    guards, [ops[i][1] for i in pending], [op_read_guarded(g) for g in guards]
                )
                if ok:
                    if revisions is not None:
                        revisions.update(dict.fromkeys(pending, revision))
                    break
                # The reads ran in the same transaction as the failed compares, so at least one shows stale.
                holds = [guard_holds(g, r) for g, r in zip(guards, responses)]
                refused.update(i for i, held in zip(pending, holds) if not held)
                pending = [i for i, held in zip(pending, holds) if held]
        return refused

    async def claim_addresses(self, claims: dict[str, str]) -> set[str]:
        """Take address keys (``address_key`` -> owner); returns the keys that were taken by somebody else."""
        keys = list(claims)
        refused = await self._guarded([(cmp_absent(k), op_put(k, claims[k])) for k in keys])
        return {keys[i] for i in refused}

    async def release(self, keys: Iterable[str]) -> None:
        """Delete claim keys (addresses of gone tasks and nodes)."""
        ops = [op_delete(k) for k in keys]
        for start in range(0, len(ops), MAX_TXN_OPS):
            await self.etcd.txn([], ops[start : start + MAX_TXN_OPS])

    # ---------------------------------------------------------- raw records

    async def get_json(self, key: str) -> dict[str, Any] | None:
        kv = await self.etcd.get(key)
        return json.loads(kv.value) if kv else None

    async def put_json(self, key: str, value: dict[str, Any], lease: int = 0) -> None:
        await self.etcd.put(key, json.dumps(value), lease=lease)


# What a status report changes in a task; the rest (and whether the task ended) is what its node acts on.
REPORTED_FIELDS = frozenset({"Status", "Version", "UpdatedAt"})


def _same_for_its_node(old: Task, new: Task) -> bool:
    """Whether a task's node acts on ``new`` as on ``old``: only its status moved, and not into an end.

    Each report (accepted, preparing, starting, running) woke the node's assignment stream, which rebuilt and
    hashed the whole assignment to find nothing to send: most of a busy manager's work."""
    if old.Status.State.terminal != new.Status.State.terminal:
        return False
    before, after = old.__dict__, new.__dict__
    return all(before[name] == after[name] for name in before if name not in REPORTED_FIELDS)


@dataclass
class TaskForms:
    """A task's wire form, and its JSON as sent to its node, each made once per version of the task: a task is
    sent to its node and listed by clients many times between changes, and encoding every task of a node's
    assignment again on each change of one was a sixth of a busy manager's work."""

    task: Task
    wire: dict[str, Any]
    _json: str | None = None
    _acted_on: str | None = None

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.wire, sort_keys=True)
        return self._json

    @property
    def acted_on(self) -> str:
        """JSON of what the task's node acts on: all but the states it reported itself, and whether it ended."""
        if self._acted_on is None:
            kept = {k: v for k, v in self.wire.items() if k not in REPORTED_FIELDS}
            self._acted_on = json.dumps({**kept, "Ended": self.task.Status.State.terminal}, sort_keys=True)
        return self._acted_on


def _share_task_spec(state: "Snapshot", old: Any, new: Any) -> None:
    """Let a decoded task or service hold the very TaskSpec object that an equal one already in the cache holds:
    its previous version's, or (a new task) its service's template. The orchestrator compares every task's
    spec with its service's on each pass, a deep comparison of two equal objects that is now an identity check;
    and a hundred thousand tasks of few services hold few specs."""
    if isinstance(new, Task):
        if old is not None and new.Spec == old.Spec:
            new.Spec = old.Spec
        elif old is None:
            service = state.services.get(new.ServiceID)
            if service is not None and new.Spec == service.Spec.TaskTemplate:
                new.Spec = service.Spec.TaskTemplate
    elif isinstance(new, Service) and old is not None and new.Spec.TaskTemplate == old.Spec.TaskTemplate:
        new.Spec.TaskTemplate = old.Spec.TaskTemplate


@dataclass
class Snapshot:
    """What the cache holds; plain dicts keyed by ID."""

    services: dict[str, Service] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    configs: dict[str, Config] = field(default_factory=dict)
    unlock_key: str | None = None  # sealed with the data key
    # Addresses in use per network (ip -> owner), and each node's own address per network (node -> net -> ip).
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)
    node_networks: dict[str, dict[str, str]] = field(default_factory=dict)
    cluster: Swarm | None = None
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    managers: dict[str, dict[str, Any]] = field(default_factory=dict)
    leader: dict[str, Any] | None = None
    gossip_keys: list[str] = field(default_factory=list)  # base64, newest first
    gossip_rotated: float = 0.0  # UNIX time the newest key was made
    down_reports: dict[str, set[str]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    log_subscriptions: dict[str, SubscriptionMessage] = field(default_factory=dict)
    # Indexes the dispatcher and the API need on every call.
    tasks_by_service: dict[str, set[str]] = field(default_factory=dict)
    tasks_by_node: dict[str, set[str]] = field(default_factory=dict)
    # When something a node's assignments are made of last changed: its tasks or its node record
    # (per node), services or managers (for all). Stamps only grow, across reloads too, so a
    # dispatcher stream recomputes a node's assignments only when they can have changed.
    node_stamps: dict[str, int] = field(default_factory=dict)
    shared_stamp: int = 0
    # The nodes whose stamp moved, and whether the shared one did, since the cache last woke the streams: a
    # revision wakes only the streams it concerns, rather than every stream checking its stamp on every
    # revision. A new snapshot (a reload) wakes them all.
    touched_nodes: set[str] = field(default_factory=set)
    touched_all: bool = True
    # When a service or one of its tasks last changed (kept after the service is deleted, while its tasks
    # go), and when any node record did: the leader reconciles only what moved since its last pass.
    service_stamps: dict[str, int] = field(default_factory=dict)
    nodes_stamp: int = 0
    # task ID -> the forms of its current version: see task_forms.
    _task_wires: dict[str, TaskForms] = field(default_factory=dict)

    def task_forms(self, task: Task) -> TaskForms:
        """The forms of a task of this snapshot. Callers must not change them."""
        made = self._task_wires.get(task.ID)
        if made is None or made.task is not task:
            made = self._task_wires[task.ID] = TaskForms(task, task.wire())
        return made

    def task_wire(self, task: Task) -> dict[str, Any]:
        """``task.wire()`` of a task of this snapshot, made once per version. Callers must not change the dict."""
        return self.task_forms(task).wire

    def touch_service(self, service_id: str) -> None:
        self.service_stamps[service_id] = next(_STAMPS)

    def forget_service(self, service_id: str) -> None:
        """Drop the stamp of a deleted service once its last task is gone: nothing is left to reconcile."""
        if service_id not in self.services and not self.tasks_by_service.get(service_id):
            self.service_stamps.pop(service_id, None)
            self.tasks_by_service.pop(service_id, None)

    def touch_node(self, node_id: str | None) -> None:
        if node_id:
            self.node_stamps[node_id] = next(_STAMPS)
            self.touched_nodes.add(node_id)

    def touch_service_nodes(self, service_id: str) -> None:
        """A service's name and endpoint go to the nodes running its tasks, and to no others."""
        for task_id in self.tasks_by_service.get(service_id, ()):
            task = self.tasks.get(task_id)
            if task is not None:
                self.touch_node(task.NodeID)

    def touch_all(self) -> None:
        self.shared_stamp = next(_STAMPS)
        self.touched_all = True

    def assignment_stamp(self, node_id: str) -> tuple[int, int]:
        return self.node_stamps.get(node_id, 0), self.shared_stamp

    def index_address(self, key: str, owner: str | None) -> None:
        network_id, ip = key[len(ADDRS):].split("/", 1)
        book = self.addresses.setdefault(network_id, {})
        old = book.pop(ip, None)
        if old and old.startswith("node:"):
            self.touch_node(old[5:])
            self.node_networks.get(old[5:], {}).pop(network_id, None)
        if owner is not None:
            book[ip] = owner
            if owner.startswith("node:"):
                self.touch_node(owner[5:])
                self.node_networks.setdefault(owner[5:], {})[network_id] = ip

    def index_task(self, old: Task | None, new: Task | None) -> None:
        if old is None or new is None or not _same_for_its_node(old, new):
            self.touch_node(old.NodeID if old is not None else None)
            self.touch_node(new.NodeID if new is not None else None)
        for task in (old, new):
            if task is not None:
                self.touch_service(task.ServiceID)
        if old is not None:
            self.tasks_by_service.get(old.ServiceID, set()).discard(old.ID)
            if new is None:
                self._task_wires.pop(old.ID, None)
                self.forget_service(old.ServiceID)
            if old.NodeID:
                self.tasks_by_node.get(old.NodeID, set()).discard(old.ID)
        if new is not None:
            self.tasks_by_service.setdefault(new.ServiceID, set()).add(new.ID)
            if new.NodeID:
                self.tasks_by_node.setdefault(new.NodeID, set()).add(new.ID)


class Cache:
    """A local copy of ``/swarm/``, kept current by one etcd watch.

    The leader's loops and the dispatcher read from here instead of listing
    etcd on every tick; ``barrier()`` makes a read at least as new as any
    write acknowledged before it.
    """

    def __init__(self, etcd: EtcdClient) -> None:
        self.etcd = etcd
        self.state = Snapshot()
        self.revision = 0
        self._changed = asyncio.Condition()
        self._ready = asyncio.Event()
        # Assignment streams waiting for their own node's inputs: node ID -> (stamp seen, event to set).
        self._assignment_waiters: dict[str, list[tuple[tuple[int, int], asyncio.Event]]] = {}

    async def run(self) -> None:
        while True:
            try:
                await self._load()
                async for batch in self.etcd.watch_prefix(ROOT, self.revision + 1):
                    await self._apply_batch(batch.events)
                    await self._advance(max(self.revision, batch.revision))
                log.warning("etcd watch ended at revision %d; reconnecting", self.revision)
            except CompactedError as exc:
                log.warning("cache fell behind a compaction (%s); reloading", exc)
            except (EtcdError, OSError, asyncio.TimeoutError) as exc:
                log.warning("etcd watch failed at revision %d: %s; retrying", self.revision, exc)
                await asyncio.sleep(0.5)
            except Exception:  # the cache must outlive any single bad record
                log.exception("cache watch loop failed at revision %d; reloading", self.revision)
                await asyncio.sleep(0.5)

    async def _load(self) -> None:
        kvs, revision = await self.etcd.get_prefix(ROOT)
        self.state = Snapshot()
        for kv in kvs:
            self._apply("put", kv)
        await self._advance(revision)
        self._ready.set()

    async def _apply_batch(self, events: list[WatchEvent]) -> None:
        """Apply a watch batch: of a key's changes only the last (a cache trailing a busy store gets a task's
        several states in one batch, and decoding was most of the work), and letting other work run now and
        then: thousands of events held the event loop for seconds on a loaded machine, and the renewals of
        heartbeats and leases timed out meanwhile. Readers still see whole revisions only: other work runs
        only where the state is that of the revision just applied."""
        last = {event.kv.key: i for i, event in enumerate(events)}
        deferred: set[str] = set()  # keys whose earlier changes were skipped and whose last is still to come
        applied = 0
        for i, event in enumerate(events):
            key = event.kv.key
            if last[key] != i:
                deferred.add(key)
                continue
            if applied >= YIELD_EVERY and not deferred and event.kv.mod_revision != events[i - 1].kv.mod_revision:
                applied = 0
                await asyncio.sleep(0)
            deferred.discard(key)
            self._apply(event.kind, event.kv)
            applied += 1

    def _apply(self, kind: str, kv: KeyValue) -> None:
        key, state = kv.key, self.state
        try:
            for model, prefix in TABLES.items():
                if key.startswith(prefix):
                    table: dict[str, Any] = getattr(state, prefix[len(ROOT) : -1])
                    obj_id = key[len(prefix) :]
                    old = table.pop(obj_id, None)
                    new = None if kind == "delete" else decode(model, kv)
                    if new is not None:
                        _share_task_spec(state, old, new)
                        table[obj_id] = new
                    if model is Task:
                        state.index_task(old, new)
                    elif model is Node:
                        state.touch_node(obj_id)
                        state.nodes_stamp = next(_STAMPS)
                    elif model is Service:
                        state.touch_service(obj_id)
                        # Not every node: creating fifty services made every assignment stream recompute fifty
                        # times, at 2,500 nodes a third of each manager's work while the tasks converged.
                        state.touch_service_nodes(obj_id)
                        if new is None:
                            state.forget_service(obj_id)
                    else:
                        state.touch_all()
                    return
            if key.startswith(ADDRS):
                state.index_address(key, None if kind == "delete" else kv.value.decode())
            elif key == CLUSTER_KEY:
                state.cluster = None if kind == "delete" else decode(Swarm, kv)
            elif key == LEADER_KEY:
                state.leader = None if kind == "delete" else json.loads(kv.value)
            elif key == UNLOCK_KEY:
                state.unlock_key = None if kind == "delete" else kv.value.decode()
            elif key == GOSSIP_KEY:
                record = {} if kind == "delete" else json.loads(kv.value)
                state.gossip_keys = list(record.get("keys", []))
                state.gossip_rotated = float(record.get("rotated", 0))
                state.touch_all()
            elif key.startswith(DOWN_REPORTS):
                node_id, _, reporter = key[len(DOWN_REPORTS):].partition("/")
                reporters = state.down_reports.setdefault(node_id, set())
                if kind == "delete":
                    reporters.discard(reporter)
                else:
                    reporters.add(reporter)
            elif key.startswith(REMOVED):
                node_id = key[len(REMOVED):]
                if kind == "delete":
                    state.removed.discard(node_id)
                else:
                    state.removed.add(node_id)
                # Wakes the removed node's assignment stream, which then ends.
                state.touch_node(node_id)
            elif key.startswith(LOG_SUBSCRIPTIONS):
                sub_id = key[len(LOG_SUBSCRIPTIONS):]
                state.log_subscriptions.pop(sub_id, None)
                if kind != "delete":
                    state.log_subscriptions[sub_id] = SubscriptionMessage.model_validate_json(kv.value)
                # Which nodes a subscription concerns depends on their tasks: each node's stream decides.
                state.touch_all()
            elif key.startswith(SESSIONS) or key.startswith(MANAGERS):
                table = state.sessions if key.startswith(SESSIONS) else state.managers
                obj_id = key.rsplit("/", 1)[1]
                if table is state.managers:
                    state.touch_all()
                if kind == "delete":
                    table.pop(obj_id, None)
                else:
                    table[obj_id] = json.loads(kv.value)
        except ValueError:
            log.exception("ignoring unreadable record %s at revision %d", key, kv.mod_revision)

    async def _advance(self, revision: int) -> None:
        async with self._changed:
            self.revision = revision
            self._changed.notify_all()
        state = self.state
        waiting = self._assignment_waiters
        concerned = list(waiting) if state.touched_all else [n for n in state.touched_nodes if n in waiting]
        state.touched_all = False
        state.touched_nodes.clear()
        for node_id in concerned:
            stamp = state.assignment_stamp(node_id)
            for seen, event in waiting[node_id]:
                if seen != stamp:
                    event.set()

    async def wait_assignment_change(self, node_id: str, seen: tuple[int, int], timeout: float) -> None:
        """Wait until the inputs of ``node_id``'s assignment move past stamp ``seen``, or ``timeout``.

        Only that node's stream wakes: waking every node's stream on every revision (a thousand streams, a
        status report per revision) kept a busy manager's event loop from reading its own watch."""
        if self.state.assignment_stamp(node_id) != seen:
            return
        waiter = (seen, asyncio.Event())
        waiters = self._assignment_waiters.setdefault(node_id, [])
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            waiters.remove(waiter)
            if not waiters:
                del self._assignment_waiters[node_id]

    async def ready(self) -> None:
        await self._ready.wait()

    async def wait_change(self, after: int, timeout: float | None = None) -> int:
        """Wait until the cache moves past revision ``after``; returns the new revision."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.revision > after), timeout)
            except asyncio.TimeoutError:
                pass
            return self.revision

    async def reach(self, target: int, timeout: float) -> bool:
        """Wait until the cache holds revision ``target``; False if it did not within ``timeout``."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.revision >= target), timeout)
            except asyncio.TimeoutError:
                return False
            return True

    async def barrier(self, timeout: float = 2.0) -> None:
        """Wait until the cache holds every write etcd had acknowledged when this was called."""
        await self.ready()
        target = await self.etcd.revision()
        if not await self.reach(target, timeout):
            log.warning("cache at revision %d did not reach %d within %.1fs", self.revision, target, timeout)
