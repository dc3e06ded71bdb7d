"""Job services: tasks that run to completion, once per slot, for the job's current iteration.

A replicated job has ``TotalCompletions`` slots (1..N), of which at most
``MaxConcurrent`` run at a time; a global job has one slot per eligible node.
A slot is done once a task of the current iteration completed; a task that
fails is replaced per the restart policy (never after success: the API turns
condition ``any`` into ``on-failure``). Every update of the service bumps
``JobStatus.JobIteration``, which stops what still runs of the earlier
iteration and runs the job again. As in the orchestrator, everything is
derived from the tasks, so a new leader carries on.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from ..api.models import Node, Service, Task, TaskState
from .constraints import parse_constraints
from .restart import is_live, restart_allowed

if TYPE_CHECKING:
    from .orchestrator import PlanWork


def iteration_of(service: Service) -> int:
    return service.JobStatus.JobIteration.Index if service.JobStatus else 0


def _of_iteration(task: Task, iteration: int) -> bool:
    return task.JobIteration is not None and task.JobIteration.Index == iteration


def _running(task: Task) -> bool:
    return is_live(task) and not task.Status.State.terminal


def reconcile_job(service: Service, slots: dict[Hashable, list[Task]], work: PlanWork) -> None:
    from .orchestrator import node_lost, promote_ready, takes_new_tasks

    iteration = iteration_of(service)
    template = service.Spec.TaskTemplate
    is_global = service.Spec.Mode.is_global
    constraints = parse_constraints(template.Placement.Constraints if template.Placement else None)

    def fits(node: Node) -> bool:
        return all(c.matches(node) for c in constraints)

    def keeps(node: Node | None) -> bool:
        # As for global services: a node that is down or paused keeps its task, a drained one does not.
        return node is not None and node.Spec.Availability != "drain" and fits(node)

    for key, history in slots.items():
        for task in [t for t in history if is_live(t)]:
            if not _of_iteration(task, iteration):
                why = "the job runs a new iteration"
            elif task.Status.State.terminal and task.Status.State != TaskState.COMPLETE:
                why = f"it ended ({task.Status.State.value})"
            elif task.Status.State.terminal:
                continue  # completed: it stays, desired complete, as Swarm shows it
            elif is_global:
                why = "" if keeps(work.nodes.get(str(key))) else f"node {key} no longer takes the job's tasks"
            else:
                why = node_lost(task, work)
            if why:
                work.set_desired(history, task, TaskState.SHUTDOWN, why)
        promote_ready(history, work, TaskState.COMPLETE)

    if is_global:
        keys: list[Hashable] = [node.ID for node in work.nodes.values() if takes_new_tasks(node) and fits(node)]
        limit = len(keys)
    else:
        job = service.Spec.Mode.ReplicatedJob
        assert job is not None
        keys = list(range(1, (job.TotalCompletions or 0) + 1))
        limit = job.MaxConcurrent
    running = sum(1 for history in slots.values() if any(_running(t) for t in history))
    for key in keys:
        if running >= limit:
            break
        history = slots.setdefault(key, [])
        current = [t for t in history if _of_iteration(t, iteration)]
        if not _wants_task(current):
            continue
        why = "restarting a failed job task" if current else f"job iteration {iteration}"
        work.create(service, key, history, wait_allowed=bool(current), why=why)
        running += 1


def _wants_task(current: Sequence[Task]) -> bool:
    """Whether a slot, given its tasks of this iteration (oldest first), needs a new one."""
    if not current:
        return True
    if any(_running(t) for t in current) or any(t.Status.State == TaskState.COMPLETE for t in current):
        return False
    latest = current[-1]
    if not latest.Status.State.terminal:
        return True  # stopped before it ended (its node was lost): run it elsewhere
    return restart_allowed(latest, current[:-1])
