"""Restart rules for one slot: whether an ended task comes back, and when its replacement may start.

Nothing extra is stored for this: every answer is derived from the tasks of
the slot (a replicated slot number, or a node for a global service), so the
leader can change hands between ticks without losing count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..api.duration import SECOND
from ..api.models import Node, Task, TaskSpec, TaskState
from .timestamps import parse_timestamp

# Observed states a task reaches on its own. A task the managers stop ends as
# SHUTDOWN, which is why SHUTDOWN is not here: it neither counts as a restart
# attempt nor keeps a slot ended.
ENDED_ON_ITS_OWN = frozenset({TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED, TaskState.ORPHANED})


def is_live(task: Task) -> bool:
    """The task holds its slot: desired new..running (READY included), or complete (a job's task)."""
    return task.DesiredState.rank <= TaskState.COMPLETE.rank


def has_ended(task: Task) -> bool:
    """Meant to run, but the worker reports it finished."""
    return is_live(task) and task.Status.State.terminal


def age_key(task: Task) -> tuple[float, float, str]:
    """Oldest first: creation time, then the last status change, then the ID for a stable order."""
    return parse_timestamp(task.CreatedAt), parse_timestamp(task.Status.Timestamp), task.ID


def restart_allowed(ended: Task, earlier: Sequence[Task]) -> bool:
    """Whether the restart policy lets the slot of ``ended`` run again.

    ``earlier`` are the slot's tasks created before ``ended``. Attempts are the
    earlier tasks of the same spec that ended on their own, counted within the
    window before ``ended`` ended: measuring from the end time rather than from
    the clock keeps the answer stable, so a slot given up on stays given up on.
    """
    policy = ended.Spec.RestartPolicy
    if policy.Condition == "none":
        return False
    if policy.Condition == "on-failure" and ended.Status.State == TaskState.COMPLETE:
        return False
    if policy.MaxAttempts > 0:
        ended_at = parse_timestamp(ended.Status.Timestamp)
        since = ended_at - policy.Window / SECOND if policy.Window else float("-inf")
        attempts = sum(
            1
            for task in earlier
            if task.Status.State in ENDED_ON_ITS_OWN
            and not is_live(task)
            and parse_timestamp(task.Status.Timestamp) >= since
            and task.Spec == ended.Spec
        )
        if attempts >= policy.MaxAttempts:
            return False
    return True


def slot_finished(history: Sequence[Task], template: TaskSpec) -> bool:
    """A slot without a live task that its restart policy keeps ended.

    ``history`` is the slot's tasks, oldest first. A slot whose last task ran an
    older spec is not finished: the service changed since, so it runs again.
    """
    if not history or any(is_live(task) for task in history):
        return False
    latest = history[-1]
    if latest.Status.State not in ENDED_ON_ITS_OWN or latest.Spec != template:
        return False
    return not restart_allowed(latest, history[:-1])


def node_ready(node_id: str | None, nodes: Mapping[str, Node]) -> bool:
    node = nodes.get(node_id) if node_id else None
    return node is not None and node.Status.State == "ready"


def still_stopping(task: Task, nodes: Mapping[str, Node]) -> bool:
    """Told to stop, not yet reported stopped, on a node that can still report it."""
    return not is_live(task) and not task.Status.State.terminal and node_ready(task.NodeID, nodes)


def start_blocked(
    previous: Task | None, others: Sequence[Task], restart_delay: int, nodes: Mapping[str, Node], now: float
) -> bool:
    """Whether a new task of a slot must wait (desired READY) rather than run.

    It waits while another task of the slot (``others``) is still stopping, so
    the two never run side by side as stop-first updates promise; and, when
    ``previous`` (the slot's task created just before it) ended on its own,
    until the restart delay has passed since that end.
    """
    if any(still_stopping(task, nodes) for task in others):
        return True
    if restart_delay <= 0 or previous is None or previous.Status.State not in ENDED_ON_ITS_OWN:
        return False
    return now < parse_timestamp(previous.Status.Timestamp) + restart_delay / SECOND
