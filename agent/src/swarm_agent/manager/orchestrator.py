"""The orchestrator: from services (what should run) to tasks (what runs where).

Pure and level-based: ``reconcile`` looks at the whole state and returns a
Plan; the leader's loop writes it with compare-and-swap and calls again next
tick. Applying a plan and reconciling the same state again gives an empty
plan. Everything the rules need (restart attempts, restart delays, update
batches) is derived from the tasks themselves, so a new leader carries on
where the old one stopped.

A *slot* is a replicated service's slot number, or a node for a global
service. Each slot holds at most one live task (two during a start-first
update) and keeps the tasks that ran in it before as history.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from ..api.models import Node, Service, ServiceUpdateStatus, Task, TaskState, TaskStatus
from .constraints import parse_constraints
from .restart import (
    ENDED_ON_ITS_OWN,
    age_key,
    has_ended,
    is_live,
    slot_finished,
    start_blocked,
    still_stopping,
)
from .timestamps import format_timestamp, parse_timestamp
from .jobs import reconcile_job
from .updater import ACTIVE, PAUSED, next_status, plan_update

log = logging.getLogger(__name__)


@dataclass
class Plan:
    create: list[Task] = field(default_factory=list)  # brand new tasks
    update: list[Task] = field(default_factory=list)  # modified copies of existing tasks
    delete: list[str] = field(default_factory=list)  # task IDs to delete from the store
    services: list[Service] = field(default_factory=list)  # modified copies: update status, rollback

    def empty(self) -> bool:
        return not (self.create or self.update or self.delete or self.services)


class PlanWork:
    """The plan being built, and the state as it will be once the plan is applied."""

    def __init__(
        self, nodes: Sequence[Node], now: float, new_id: Callable[[], str], running_since: Mapping[str, float]
    ) -> None:
        self.nodes = {node.ID: node for node in nodes}
        self.now = now
        self.running_since = running_since
        self.stamp = format_timestamp(now)
        self._new_id = new_id
        self.created: list[Task] = []
        self.updated: dict[str, Task] = {}
        self.deleted: dict[str, None] = {}  # ordered set
        self.services: list[Service] = []

    def set_desired(self, history: list[Task], task: Task, state: TaskState, why: str) -> Task:
        changed = self.updated.get(task.ID) or task.model_copy(deep=True)
        changed.DesiredState = state
        changed.UpdatedAt = self.stamp
        self.updated[task.ID] = changed
        history[_position(history, task)] = changed
        log.info("task %s (%s): desired state %s, %s", task.ID, task.Name, state.value, why)
        return changed

    def delete(self, history: list[Task], task: Task, why: str) -> None:
        del history[_position(history, task)]
        self.deleted[task.ID] = None
        log.info("task %s (%s) deleted: %s", task.ID, task.Name, why)

    def create(self, service: Service, key: Hashable, history: list[Task], *, wait_allowed: bool, why: str) -> Task:
        """A new task of ``service`` in slot ``key``, appended to the slot's history.

        It is created READY instead of RUNNING when it must wait for its slot
        (see restart.start_blocked), unless ``wait_allowed`` is False (the
        replacement of a task whose node is lost starts right away).
        """
        template = service.Spec.TaskTemplate
        is_global = service.Spec.Mode.is_global
        blocked = wait_allowed and start_blocked(
            history[-1] if history else None, history, template.RestartPolicy.Delay, self.nodes, self.now
        )
        task = Task(
            ID=self._new_id(),
            CreatedAt=self.stamp,
            UpdatedAt=self.stamp,
            Name=f"{service.Spec.Name}.{key}",
            Labels={},
            Spec=template.model_copy(deep=True),
            ServiceID=service.ID,
            Slot=None if is_global else key,
            NodeID=key if is_global else None,
            # A global task is bound to its node already; PENDING lets the scheduler still check that node.
            Status=TaskStatus(Timestamp=self.stamp, State=TaskState.PENDING if is_global else TaskState.NEW),
            # A job's task runs to completion, as Swarm has it.
            DesiredState=TaskState.READY if blocked else self.run_state(service),
            JobIteration=service.JobStatus.JobIteration.model_copy() if service.JobStatus else None,
        )
        self.created.append(task)
        history.append(task)
        log.info("task %s (%s) created for service %s: %s", task.ID, task.Name, service.ID, why)
        return task

    @staticmethod
    def run_state(service: Service) -> TaskState:
        return TaskState.COMPLETE if service.Spec.Mode.is_job else TaskState.RUNNING

    def plan(self) -> Plan:
        return Plan(
            create=self.created,
            update=[task for task_id, task in self.updated.items() if task_id not in self.deleted],
            delete=list(self.deleted),
            services=self.services,
        )


def reconcile(
    services: Sequence[Service],
    tasks: Sequence[Task],
    nodes: Sequence[Node],
    *,
    history_limit: int,
    now: float,
    new_id: Callable[[], str],
    running_since: Mapping[str, float] | None = None,
) -> Plan:
    """What to create, change and delete so that tasks converge on the services.

    ``now`` is a UNIX time; ``new_id`` makes task IDs (the only source of
    variation, so tests can make it deterministic); ``running_since`` says
    when tasks were first seen running, for those that no longer run (a
    running task's status timestamp says it already).
    """
    work = PlanWork(nodes, now, new_id, running_since or {})
    by_service: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_service[task.ServiceID].append(task)
    known = {service.ID for service in services}
    for service_id, service_tasks in by_service.items():
        if service_id not in known:
            _remove_tasks(service_tasks, work)
    for service in services:
        mode = service.Spec.Mode
        slots = _slots(by_service.get(service.ID, []), by_node=mode.is_global)
        if mode.is_job:
            reconcile_job(service, slots, work)
        elif mode.is_global:
            _reconcile_global(service, slots, work)
        else:
            _reconcile_replicated(service, slots, work)
        if not mode.is_job:
            _roll_update(service, slots, work)
        for history in slots.values():
            _trim_history(history, history_limit, work)
    return work.plan()


def _slot_key(task: Task, by_node: bool) -> Hashable:
    return (task.NodeID or "") if by_node else (task.Slot or 0)


def _position(history: Sequence[Task], task: Task) -> int:
    # By identity: comparing whole task models would be slow and could match a twin.
    for position, candidate in enumerate(history):
        if candidate is task:
            return position
    raise ValueError(f"task {task.ID} is not in its slot's history")


def _slots(tasks: Sequence[Task], *, by_node: bool) -> dict[Hashable, list[Task]]:
    slots: dict[Hashable, list[Task]] = defaultdict(list)
    for task in tasks:
        slots[_slot_key(task, by_node)].append(task)
    for history in slots.values():
        history.sort(key=age_key)
    return slots


def _remove_tasks(tasks: Sequence[Task], work: PlanWork) -> None:
    """The service is gone: stop its tasks, and forget those that no worker will report on again."""
    history = list(tasks)
    for task in tasks:
        node = work.nodes.get(task.NodeID) if task.NodeID else None
        gone = task.Status.State.terminal or node is None or node.Status.State == "down"
        if gone:
            work.delete(history, task, "its service was removed")
        elif task.DesiredState != TaskState.REMOVE:
            work.set_desired(history, task, TaskState.REMOVE, "its service was removed")


def node_lost(task: Task, work: PlanWork) -> str:
    """Why a replicated task must move off its node, or "" when it may stay."""
    if task.NodeID is None:
        return ""
    node = work.nodes.get(task.NodeID)
    if node is None:
        return f"node {task.NodeID} was removed"
    if node.Status.State == "down":
        return f"node {task.NodeID} is down"
    if node.Spec.Availability == "drain":
        return f"node {task.NodeID} is drained"
    return ""


def _end_tasks(history: list[Task], work: PlanWork) -> bool:
    """Mark the slot's ended tasks shut down; True when one ended."""
    ended = False
    for task in [t for t in history if has_ended(t)]:
        work.set_desired(history, task, TaskState.SHUTDOWN, f"it ended ({task.Status.State.value})")
        ended = True
    return ended


def promote_ready(history: list[Task], work: PlanWork, run_state: TaskState = TaskState.RUNNING) -> None:
    """Start READY tasks whose wait (old task stopping, restart delay) is over."""
    for task in [t for t in history if t.DesiredState == TaskState.READY]:
        position = _position(history, task)
        others = history[:position] + history[position + 1:]
        previous = history[position - 1] if position else None
        if not start_blocked(previous, others, task.Spec.RestartPolicy.Delay, work.nodes, work.now):
            work.set_desired(history, task, run_state, "its wait is over")


def _reconcile_replicated(service: Service, slots: dict[Hashable, list[Task]], work: PlanWork) -> None:
    template = service.Spec.TaskTemplate
    replicas = service.Spec.Mode.Replicated.Replicas if service.Spec.Mode.Replicated else 0
    refill: dict[Hashable, bool] = {}  # slots emptied this tick -> whether the replacement may wait
    for key, history in slots.items():
        was_held = any(is_live(task) for task in history)
        ended = _end_tasks(history, work)
        lost = False
        for task in [t for t in history if is_live(t)]:
            why = node_lost(task, work)
            if why:
                work.set_desired(history, task, TaskState.SHUTDOWN, why)
                lost = True
        if was_held and (ended or lost) and not any(is_live(task) for task in history):
            refill[key] = not lost
        promote_ready(history, work)

    held = {key for key, history in slots.items() if any(is_live(task) for task in history)}
    finished = {key for key, history in slots.items() if key not in held and slot_finished(history, template)}
    occupied = len(held) + len(finished)
    if occupied < replicas:
        missing = replicas - occupied
        # Replacements keep their slot; further tasks take the lowest free slot numbers.
        chosen = [key for key in refill if key not in finished][:missing]
        number = 1
        while len(chosen) < missing:
            if number not in held and number not in finished and number not in chosen:
                chosen.append(number)
            number += 1
        for key in chosen:
            history = slots.setdefault(key, [])
            why = "replacing a task that ended" if key in refill else "scaling up"
            work.create(service, key, history, wait_allowed=refill.get(key, True), why=why)
    elif occupied > replicas:
        excess = occupied - replicas
        for key in sorted(finished, key=_desc_slot)[:excess]:
            history = slots[key]
            for task in [t for t in history if not still_stopping(t, work.nodes)]:
                work.delete(history, task, f"service {service.Spec.Name} scaled down, slot {key} ended")
            excess -= 1
        for key in _scale_down_order(slots, held)[:excess]:
            history = slots[key]
            for task in [t for t in history if is_live(t)]:
                work.set_desired(history, task, TaskState.SHUTDOWN, f"service {service.Spec.Name} scaled down")


def _desc_slot(key: Hashable) -> int:
    return -key if isinstance(key, int) else 0


def _scale_down_order(slots: Mapping[Hashable, Sequence[Task]], held: set[Hashable]) -> list[Hashable]:
    """Held slots, the first to remove first.

    Swarm's balancing rule: number each task as the n-th copy of the service
    on its node (running tasks and low slot numbers get the low numbers), then
    remove the highest copy numbers first, so the nodes carrying the most
    copies shed first. Tasks not on any node yet go before all others; then
    not-yet-running tasks; then the highest slot number.
    """
    holders = []
    for key in held:
        live = [task for task in slots[key] if is_live(task)]
        holders.append((key, live[-1]))
    holders.sort(key=lambda kt: (kt[1].Status.State != TaskState.RUNNING, -_desc_slot(kt[0])))
    copies: dict[str, int] = defaultdict(int)
    ranked = []
    for key, task in holders:
        if task.NodeID is None:
            copy = 1 << 30
        else:
            copies[task.NodeID] += 1
            copy = copies[task.NodeID]
        ranked.append((-copy, task.Status.State == TaskState.RUNNING, _desc_slot(key), key))
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked]


def _reconcile_global(service: Service, slots: dict[Hashable, list[Task]], work: PlanWork) -> None:
    template = service.Spec.TaskTemplate
    constraints = parse_constraints(template.Placement.Constraints if template.Placement else None)

    def fits(node: Node) -> bool:
        return all(c.matches(node) for c in constraints)

    for key, history in slots.items():
        _end_tasks(history, work)
        node = work.nodes.get(str(key))
        if node is None:
            why = f"node {key} was removed"
        elif node.Spec.Availability == "drain":
            why = f"node {key} is drained"
        elif not fits(node):
            why = f"node {key} no longer satisfies the service's constraints"
        else:
            why = ""  # a node that is down keeps its task until it returns, as in Swarm
        if why:
            for task in [t for t in history if is_live(t)]:
                work.set_desired(history, task, TaskState.SHUTDOWN, why)
        promote_ready(history, work)

    for node in work.nodes.values():
        # Paused nodes keep their tasks but get no new ones.
        if not takes_new_tasks(node) or not fits(node):
            continue
        history = slots.setdefault(node.ID, [])
        if any(is_live(task) for task in history) or slot_finished(history, template):
            continue
        why = "replacing a task that ended" if history else f"node {node.ID} is eligible"
        work.create(service, node.ID, history, wait_allowed=True, why=why)


def takes_new_tasks(node: Node | None) -> bool:
    return node is not None and node.Status.State == "ready" and node.Spec.Availability == "active"


def _roll_update(service: Service, slots: dict[Hashable, list[Task]], work: PlanWork) -> None:
    status = service.UpdateStatus
    state = status.State if status else None
    rolling_back = state in ("rollback_started", "rollback_paused")
    config = service.Spec.RollbackConfig if rolling_back else service.Spec.UpdateConfig
    updatable = slots
    if service.Spec.Mode.is_global:
        # A global task is updated on its own node, which must take a new task: one on a node that is
        # down or paused keeps running its old spec until the node is back, rather than leave a
        # replacement pending there that would stall the whole update.
        updatable = {key: history for key, history in slots.items() if takes_new_tasks(work.nodes.get(str(key)))}
    active = state in ACTIVE or state in PAUSED
    started = parse_timestamp(status.StartedAt) if active and status and status.StartedAt else work.now
    step = plan_update(
        updatable, service.Spec.TaskTemplate, config, work.now,
        started=started, paused=state in PAUSED, running_since=work.running_since,
    )
    if step.waiting:
        log.debug("service %s update waits: %s", service.ID, step.waiting)
    for task in step.retire:
        history = slots[_slot_key(task, service.Spec.Mode.is_global)]
        work.set_desired(history, task, TaskState.SHUTDOWN, "its start-first replacement runs")
    change = next_status(status, step, config, work.stamp)
    if change is not None:
        _write_status(service, change.status, change.rollback, work)
        if change.status.State in PAUSED or change.rollback:
            return  # no further batch of a spec that fails
    for key in step.replace:
        history = slots[key]
        if config.Order == "stop-first":
            for task in [t for t in history if is_live(t)]:
                work.set_desired(history, task, TaskState.SHUTDOWN, f"service {service.Spec.Name} is updating")
        work.create(service, key, history, wait_allowed=True, why="rollback" if rolling_back else "rolling update")


def _write_status(service: Service, status: ServiceUpdateStatus, rollback: bool, work: PlanWork) -> None:
    """Queue the service with its new update status; a rollback also puts its previous spec back."""
    changed = service.model_copy(deep=True)
    changed.UpdateStatus = status
    changed.UpdatedAt = work.stamp
    if rollback:
        if service.PreviousSpec is None:
            status.State, status.Message = "paused", f"{status.Message}; no previous spec to roll back to"
        else:
            changed.Spec, changed.PreviousSpec = service.PreviousSpec.model_copy(deep=True), None
    work.services.append(changed)
    log.info("service %s (%s): update %s: %s", service.ID, service.Spec.Name, status.State, status.Message)


def _trim_history(history: list[Task], limit: int, work: PlanWork) -> None:
    """Delete the oldest tasks of a slot beyond ``limit``, keeping what the rules still read.

    Kept whatever the limit: live tasks; tasks still stopping on a ready node
    (the worker still has to stop them); the newest task (an ended slot is
    remembered by it); the task before a READY one (its end starts the restart
    delay); and, when the policy caps attempts, the ended tasks counted as
    attempts.
    """
    if len(history) <= limit:
        return
    keep: set[str] = {history[-1].ID}
    for position, task in enumerate(history):
        if is_live(task) or still_stopping(task, work.nodes):
            keep.add(task.ID)
        if task.DesiredState == TaskState.READY and position:
            keep.add(history[position - 1].ID)
    attempts = max(task.Spec.RestartPolicy.MaxAttempts for task in history)
    if attempts:
        ended = [task for task in history if task.Status.State in ENDED_ON_ITS_OWN]
        keep.update(task.ID for task in ended[-(attempts + 1):])
    excess = len(history) - limit
    for task in [t for t in history if t.ID not in keep]:
        if excess <= 0:
            break
        work.delete(history, task, "task history limit")
        excess -= 1
