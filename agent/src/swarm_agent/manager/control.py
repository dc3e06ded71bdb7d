"""The leader's control loop: node liveness, orchestration and scheduling, one tick at a time.

Each tick reads the watched cache, decides with the pure orchestrator and
scheduler, and writes back with compare-and-swap. A write refused because
somebody changed the object meanwhile is simply decided again on the next
tick, which the change itself triggers.
"""

import asyncio
import base64
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..api.errors import ApiError
from ..api.duration import SECOND
from ..api.models import Node, NodeStatus, Service, ServiceUpdateStatus, SwarmSpec, Task, TaskState, TaskStatus, now
from ..api.services import endpoint_for
from ..net.gossip import Keyring
from ..pki import new_node_id
from ..store.state import GOSSIP_KEY, Conflict, NameConflict, PortConflict
from .allocator import Allocator
from .orchestrator import Plan, reconcile
from .restart import is_live
from .scheduler import schedule
from .timestamps import parse_timestamp
from .updater import ACTIVE

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger(__name__)

# Swarm batches scheduling for 50 ms so a burst of changes is decided at once.
BATCH_WINDOW = 0.05
# Time passes even when nothing is written (restart delays, update delays).
IDLE_TICK = 1.0
# Every service is reconciled at least this often, settled or not.
FULL_PASS = 10.0


class ControlLoop:
    def __init__(self, manager: "Manager") -> None:
        self.mgr = manager
        self.allocator = Allocator()
        # When each task was first seen running: a task that fails afterwards no longer says so, and
        # the updater's monitor needs it. Lost with leadership, as SwarmKit's updater loses it.
        self.running_since: dict[str, float] = {}
        # Incremental passes (see _services_to_reconcile): service ID -> its stamp when last settled.
        self._settled: dict[str, int] = {}
        self._nodes_seen = -1
        self._full_pass_at = 0.0

    async def run(self) -> None:
        cache = self.mgr.cache
        await cache.ready()
        await cache.etcd.revision()  # the first view must hold every write made before this leadership
        while True:
            await self.see_own_writes()
            revision = cache.revision
            try:
                await self.tick()
            except Exception:
                # One bad tick must not end leadership; the next change retries.
                log.exception("control loop tick failed at revision %d", cache.revision)
                await asyncio.sleep(0.5)
            await cache.wait_change(revision, timeout=IDLE_TICK)
            await asyncio.sleep(BATCH_WINDOW)

    async def see_own_writes(self) -> None:
        """Wait until the cache holds every revision this manager's etcd client has seen.

        The orchestrator decides from the cache: a view without the tasks it created last tick would have
        it create them again (a lagging watch on a busy manager once turned 1,000 replicas into 6,000)."""
        cache = self.mgr.cache
        target = cache.etcd.seen_revision
        while not await cache.reach(target, timeout=5.0):
            log.warning("control loop waits for the cache: at revision %d, its writes reached %d", cache.revision, target)

    async def tick(self) -> None:
        await self.ensure_gossip_keys()
        await self.check_liveness()
        await self.orchestrate()
        await self.place()
        await self.allocate_nodes()

    async def check_liveness(self) -> None:
        """A node is ready while its session lives; Down once it expires, or as soon as gossip on
        enough other nodes finds it dead (then its session is ended too, so it must open a new one)."""
        state = self.mgr.cache.state
        changed: list[Node] = []
        ready = sum(1 for n in state.nodes.values() if n.Status.State == "ready")
        # One witness suffices in a cluster of two; otherwise two, so one node's bad link cannot evict another.
        witnesses = 1 if ready <= 2 else 2
        for node in state.nodes.values():
            reported = len(state.down_reports.get(node.ID, ())) >= witnesses
            if reported and node.ID in state.sessions:
                await self.mgr.sessions.end(node.ID)
            alive = node.ID in state.sessions and not reported
            if node.Status.State == "ready" and not alive:
                updated = node.model_copy(deep=True)
                why = "gossip found it dead" if reported else "heartbeat failure"
                updated.Status = NodeStatus(State="down", Message=why, Addr=node.Status.Addr)
                changed.append(updated)
                log.warning("node %s (%s) is down: %s", node.ID, node.Description.Hostname, why)
            elif node.Status.State != "ready" and alive:
                updated = node.model_copy(deep=True)
                updated.Status = NodeStatus(State="ready", Addr=node.Status.Addr)
                changed.append(updated)
                log.info("node %s (%s) is ready again", node.ID, node.Description.Hostname)
        for node in changed:
            node.UpdatedAt = now()
        if changed:
            await self.mgr.store.apply(updates=changed)

    async def ensure_gossip_keys(self) -> None:
        """The gossip keyring: made with the cluster, and a new key in front every rotation period (a swarm
        setting, SwarmSpec.gossip_key_rotation).

        Three keys at most; nodes encrypt with the second-newest, so a new key reaches every node (with its
        assignments) before anybody encrypts with it, and the oldest still decrypts what is in flight."""
        state = self.mgr.cache.state
        period = (state.cluster.Spec if state.cluster else SwarmSpec()).gossip_key_rotation / SECOND
        if state.gossip_keys and time.time() - state.gossip_rotated < period:
            return
        keys = [base64.b64encode(Keyring.generate_key()).decode(), *state.gossip_keys][:3]
        await self.mgr.store.put_json(GOSSIP_KEY, {"keys": keys, "rotated": time.time()})
        log.info("gossip keyring %s: %d keys", "rotated" if state.gossip_keys else "created", len(keys))

    def note_running(self) -> None:
        tasks = self.mgr.cache.state.tasks
        for task in tasks.values():
            if task.Status.State == TaskState.RUNNING and task.ID not in self.running_since:
                self.running_since[task.ID] = parse_timestamp(task.Status.Timestamp)
        for task_id in [t for t in self.running_since if t not in tasks]:
            del self.running_since[task_id]

    def _services_to_reconcile(self) -> set[str] | None:
        """The services whose tasks or spec moved since a pass left them settled; None: every service.

        Every service after a node record changed (down, drained, joined: global services and the tasks on
        that node depend on it), and every FULL_PASS in case anything else did."""
        state = self.mgr.cache.state
        clock = time.monotonic()
        if state.nodes_stamp != self._nodes_seen or clock >= self._full_pass_at:
            self._nodes_seen, self._full_pass_at = state.nodes_stamp, clock + FULL_PASS
            return None
        return {sid for sid, stamp in state.service_stamps.items() if self._settled.get(sid) != stamp}

    def _note_settled(self, service_ids: Iterable[str], stamps: dict[str, int], plan: Plan) -> None:
        """Remember the services a pass left with nothing to do and nothing in motion: until their stamp
        moves, passes skip them. In motion: an update, or a live task not yet where it is meant to be
        (starting, waiting for a restart delay), which time alone can move on."""
        state = self.mgr.cache.state
        touched = {t.ServiceID for t in (*plan.create, *plan.update)} | {s.ID for s in plan.services}
        touched |= {state.tasks[t].ServiceID for t in plan.delete if t in state.tasks}
        for sid in service_ids:
            service = state.services.get(sid)
            settled = (
                service is not None
                and sid not in touched
                and not (service.UpdateStatus and service.UpdateStatus.State in ACTIVE)
                and all(
                    task.Status.State == task.DesiredState
                    for task in (state.tasks[t] for t in state.tasks_by_service.get(sid, ()))
                    if is_live(task)
                )
            )
            if settled:
                self._settled[sid] = stamps[sid]
            else:
                self._settled.pop(sid, None)

    async def orchestrate(self) -> None:
        state = self.mgr.cache.state
        limit = state.cluster.Spec.Orchestration.TaskHistoryRetentionLimit if state.cluster else 5
        self.note_running()
        wanted = self._services_to_reconcile()
        service_ids = set(state.service_stamps) if wanted is None else wanted
        if not service_ids:
            return
        stamps = {sid: state.service_stamps.get(sid, 0) for sid in service_ids}
        nodes = list(state.nodes.values())
        plan = Plan()
        for sid in service_ids:
            # Services are reconciled one at a time, each on what the cache holds when its turn comes, and other
            # work runs in between: a pass over ten thousand tasks held the event loop (heartbeats, API reads)
            # for a large part of a second. Writes are compare-and-swap, so a view that moved on is safe.
            state = self.mgr.cache.state
            service = state.services.get(sid)
            part = reconcile(
                [service] if service is not None else [],
                [state.tasks[t] for t in state.tasks_by_service.get(sid, ()) if t in state.tasks],
                nodes,
                history_limit=limit,
                now=time.time(),
                new_id=new_node_id,
                running_since=self.running_since,
            )
            plan.create += part.create
            plan.update += part.update
            plan.delete += part.delete
            plan.services += part.services
            await asyncio.sleep(0)
        state = self.mgr.cache.state
        self._note_settled(service_ids, stamps, plan)
        if plan.empty():
            return
        for service in plan.services:
            await self.write_service(service)
        deletes = [state.tasks[i] for i in plan.delete if i in state.tasks]
        creates = await self._with_addresses(plan.create)
        refused = await self.mgr.store.apply(creates=creates, updates=plan.update, deletes=deletes)
        log.info(
            "orchestrator: %d tasks created, %d updated, %d removed%s",
            len(plan.create),
            len(plan.update),
            len(deletes),
            f" ({refused} stale, retried next tick)" if refused else "",
        )

    async def _with_addresses(self, tasks: list[Task]) -> list[Task]:
        """The new tasks with their overlay addresses claimed; a task that lost a claim waits for the next tick."""
        claims = self.allocator.attach(tasks, self.mgr.cache.state)
        if not claims:
            return tasks
        lost = await self.mgr.store.claim_addresses(claims)
        if not lost:
            return tasks
        losers = {claims[k].partition(":")[2] for k in lost}
        log.warning("allocator: %d addresses were taken meanwhile; %d tasks wait for the next tick", len(lost), len(losers))
        await self.mgr.store.release(k for k, owner in claims.items() if k not in lost and owner.partition(":")[2] in losers)
        return [t for t in tasks if t.ID not in losers]

    async def allocate_nodes(self) -> None:
        """Addresses for nodes newly running tasks on a network, and release of the ones nobody holds."""
        state = self.mgr.cache.state
        claims = self.allocator.node_claims(state)
        if claims:
            lost = await self.mgr.store.claim_addresses(claims)
            log.info("allocator: %d node addresses claimed%s", len(claims) - len(lost),
                     f" ({len(lost)} taken meanwhile)" if lost else "")
        garbage = self.allocator.garbage(state)
        if garbage:
            await self.mgr.store.release(garbage)
            log.info("allocator: %d addresses released", len(garbage))

    async def write_service(self, service: Service) -> None:
        """Store the orchestrator's change to a service (its update status, a rollback), if nobody wrote it since.

        A rollback whose previous spec cannot be stored again (its published port or name was taken
        meanwhile) pauses the update instead, saying why, rather than be retried on every tick.
        """
        current = self.mgr.cache.state.services.get(service.ID)
        if current is None or current.Version.Index != service.Version.Index:
            return
        try:
            if service.Spec != current.Spec:
                service.Endpoint = await endpoint_for(self.mgr, service.Spec, service.ID, current.Endpoint)
            await self.mgr.store.update(service, previous=current)
        except (ApiError, NameConflict, PortConflict) as exc:
            log.warning("service %s: its previous spec cannot be restored: %s", service.ID, exc)
            paused = current.model_copy(deep=True)
            paused.UpdateStatus = ServiceUpdateStatus(
                State="paused", StartedAt=service.UpdateStatus.StartedAt if service.UpdateStatus else None,
                Message=f"update paused: the previous spec cannot be restored: {exc}",
            )
            await self._store_quietly(paused, current)
        except Conflict as exc:
            log.info("service %s changed meanwhile, its update status is decided again: %s", service.ID, exc)

    async def _store_quietly(self, service: Service, current: Service) -> None:
        try:
            await self.mgr.store.update(service, previous=current)
        except Conflict as exc:
            log.info("service %s changed meanwhile, its update status is decided again: %s", service.ID, exc)

    async def place(self) -> None:
        state = self.mgr.cache.state
        pending = [
            t
            for t in state.tasks.values()
            if t.Status.State in (TaskState.NEW, TaskState.PENDING) and is_live(t)
        ]
        if not pending:
            return
        decisions = schedule(pending, list(state.nodes.values()), list(state.tasks.values()), state.services)
        writes: list[Task] = []
        for decision in decisions:
            task = state.tasks[decision.task_id]
            if decision.node_id is not None:
                # Shallow copies: only top-level fields change, and copying each task's spec deeply was most
                # of the scheduler's time with a thousand tasks to place.
                updated = task.model_copy(update={
                    "NodeID": decision.node_id,
                    "Status": TaskStatus(State=TaskState.ASSIGNED, Message="scheduler assigned task to node"),
                    "UpdatedAt": now(),
                })
            elif task.Status.State != TaskState.PENDING or task.Status.Err != decision.reason:
                updated = task.model_copy(update={
                    "Status": TaskStatus(State=TaskState.PENDING, Message="pending task scheduling", Err=decision.reason),
                    "UpdatedAt": now(),
                })
            else:
                continue
            writes.append(updated)
        if writes:
            refused = await self.mgr.store.apply(updates=writes)
            placed = sum(1 for t in writes if t.Status.State == TaskState.ASSIGNED)
            log.info("scheduler: %d tasks assigned, %d pending%s", placed, len(writes) - placed,
                     f" ({refused} stale)" if refused else "")
