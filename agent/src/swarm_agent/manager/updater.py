"""Rolling updates: which slots move to the service's new spec in this tick, and how the update fares.

Derived from the tasks, the service's stored ``UpdateStatus`` and when tasks
were first seen running (``running_since``, kept by the leader), so a new
leader carries on where the old one stopped. A slot is *outdated* while its
live task runs another spec than the service's template. Its *update task* is
the first task of the template that replaced an older spec in it; the slot is
*in flight* until that task has been observed running or has ended. A slot
whose task never got a node (no node fits it) serves nothing, so it moves to
the new spec at once, outside the batches, and does not hold the update up.

Batches follow the update (or rollback) config: at most ``Parallelism`` slots
per batch (0 = all), the next batch once the previous one is no longer in
flight and ``Delay`` has passed since the last of them reached running.

Monitoring, as SwarmKit does it: an update task of this update (created since
the update started) that ends on its own before it ran for ``Monitor`` (or
without ever running) is a failure. The failure action applies once
failures / slots the update covers > ``MaxFailureRatio``. The update is
settled once no slot is outdated or in flight and every update task has run
for ``Monitor``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from ..api.duration import SECOND
from ..api.models import ServiceUpdateStatus, Task, TaskSpec, TaskState, UpdateConfigSpec
from .restart import ENDED_ON_ITS_OWN, is_live
from .timestamps import parse_timestamp


@dataclass
class UpdateStep:
    retire: list[Task] = field(default_factory=list)  # start-first: old tasks whose replacement now runs
    replace: list[Hashable] = field(default_factory=list)  # slots whose live task moves to the new spec now
    waiting: str = ""  # why no batch started although slots are outdated ("" when one did, or none is)
    outdated: int = 0  # slots still on an older spec
    covered: int = 0  # slots this update covers: outdated ones and those it updated already
    failed: list[Task] = field(default_factory=list)  # update tasks that failed their monitor, in order of ending
    settled: bool = False  # once this step is made: nothing outdated or in flight, every update task monitored

    def failure_over_ratio(self, max_ratio: float) -> Task | None:
        """The failed task that pushed failures over ``max_ratio`` of the covered slots, if any did."""
        covered = max(self.covered, 1)
        for count, task in enumerate(self.failed, start=1):
            if count / covered > max_ratio:
                return task
        return None


def running_at(task: Task, running_since: Mapping[str, float]) -> float | None:
    """When the task was first seen running, or None if it never was."""
    seen = running_since.get(task.ID)
    if seen is not None:
        return seen
    return parse_timestamp(task.Status.Timestamp) if task.Status.State == TaskState.RUNNING else None


def update_task(history: Sequence[Task], template: TaskSpec) -> int | None:
    """Where in ``history`` the slot's first task of ``template`` after its last task of an older spec is."""
    for position in range(len(history) - 1, 0, -1):
        if history[position - 1].Spec != template:
            return position if history[position].Spec == template else None
    return None


def plan_update(
    slots: Mapping[Hashable, Sequence[Task]],
    template: TaskSpec,
    config: UpdateConfigSpec,
    now: float,
    *,
    started: float = 0.0,
    paused: bool = False,
    running_since: Mapping[str, float] | None = None,
) -> UpdateStep:
    """The next step of the update over ``slots`` (key -> tasks, oldest first).

    ``started``: when the update began (tasks created before it are not this
    update's); ``paused``: take no new batch, only report.
    """
    seen = running_since or {}
    monitor = config.Monitor / SECOND
    step = UpdateStep()
    outdated: list[Hashable] = []
    in_flight = 0
    last_done = 0.0
    monitored_until = 0.0
    for key in sorted(slots, key=_slot_order):
        history = slots[key]
        current: list[Task] = []
        old: list[Task] = []
        for task in history:
            if is_live(task):
                (current if task.Spec == template else old).append(task)
        if current and old:
            # Start-first: the old task goes once its replacement is observed running.
            if any(task.Status.State == TaskState.RUNNING for task in current):
                step.retire.extend(old)
            else:
                in_flight += 1
        elif old:
            outdated.append(key)
            continue
        position = update_task(history, template)
        if position is None:
            continue
        fresh, previous = history[position], history[position - 1]
        ran_at = running_at(fresh, seen)
        mine = parse_timestamp(fresh.CreatedAt) >= started
        step.covered += mine
        if fresh.Status.State in ENDED_ON_ITS_OWN:
            ended_at = parse_timestamp(fresh.Status.Timestamp)
            if mine and (ran_at is None or ended_at - ran_at <= monitor):
                step.failed.append(fresh)
        elif ran_at is not None:
            if mine:
                monitored_until = max(monitored_until, ran_at + monitor)
        elif is_live(fresh) and not (current and old):
            # Not running yet. A slot that had no node before the update either (no node fits
            # it) is not waited for: that would stall the update for good.
            if fresh.NodeID is not None or previous.NodeID is not None:
                in_flight += 1
        for task in current:
            if task.Status.State == TaskState.RUNNING:
                last_done = max(last_done, parse_timestamp(task.Status.Timestamp))
    step.failed.sort(key=lambda task: parse_timestamp(task.Status.Timestamp))
    step.outdated = len(outdated)
    step.covered += len(outdated)
    if not outdated:
        step.settled = not in_flight and not step.retire and now >= monitored_until
        return step

    # Slots whose live task never got a node serve nothing: replacing them takes nothing down,
    # so they move at once and outside the batches. The rest go batch by batch.
    unplaced = [key for key in outdated if all(task.NodeID is None for task in slots[key] if is_live(task))]
    serving = [key for key in outdated if key not in unplaced]
    if paused:
        step.waiting = "update paused"
        return step
    step.replace = unplaced
    if not serving:
        step.settled = not in_flight and not step.retire and now >= monitored_until
        return step
    if in_flight:
        step.waiting = f"{in_flight} updated task(s) not running yet"
        return step
    if config.Delay and now < last_done + config.Delay / SECOND:
        step.waiting = "update delay"
        return step
    step.replace += serving[: config.Parallelism] if config.Parallelism else serving
    return step


def _slot_order(key: Hashable) -> tuple[int, str]:
    # Replicated slots are numbers, global ones node IDs; numbers sort numerically.
    return (key, "") if isinstance(key, int) else (0, str(key))


# UpdateStatus states in which the leader drives the update, and those in which it waits for the user.
ACTIVE = frozenset({"updating", "rollback_started"})
PAUSED = frozenset({"paused", "rollback_paused"})


@dataclass
class StatusChange:
    status: ServiceUpdateStatus
    rollback: bool = False  # the service goes back to its previous spec


def next_status(
    current: ServiceUpdateStatus | None, step: UpdateStep, config: UpdateConfigSpec, stamp: str
) -> StatusChange | None:
    """How the service's UpdateStatus moves after ``step``, or None when it stays as it is.

    An update starts (``updating``) when slots are outdated outside an active
    update; it ends ``completed`` (``rollback_completed``) once settled, or
    applies ``config.FailureAction`` once too many of its tasks failed: a
    rollback that fails pauses, it is never rolled back itself.
    """
    state = current.State if current else None
    if state in PAUSED:
        return None
    if current is None or state not in ACTIVE:
        if not step.outdated:
            return None
        if step.settled:  # only slots that served nothing were outdated: done at once
            return StatusChange(
                ServiceUpdateStatus(State="completed", StartedAt=stamp, CompletedAt=stamp, Message="update completed")
            )
        return StatusChange(ServiceUpdateStatus(State="updating", StartedAt=stamp, Message="update in progress"))
    rolling_back = state == "rollback_started"
    failed = step.failure_over_ratio(config.MaxFailureRatio) if config.FailureAction != "continue" else None
    if failed is not None:
        why = f"due to failure or early termination of task {failed.ID}: {task_error(failed)}"
        if rolling_back or config.FailureAction == "pause":
            paused = ("rollback_paused", f"rollback paused {why}") if rolling_back else ("paused", f"update paused {why}")
            return StatusChange(current.model_copy(update={"State": paused[0], "Message": paused[1]}))
        return StatusChange(
            ServiceUpdateStatus(State="rollback_started", StartedAt=stamp, Message=f"update rolled back {why}"),
            rollback=True,
        )
    if step.settled:
        return StatusChange(
            current.model_copy(
                update={
                    "State": "rollback_completed" if rolling_back else "completed",
                    "CompletedAt": stamp,
                    "Message": "rollback completed" if rolling_back else "update completed",
                }
            )
        )
    return None


def task_error(task: Task) -> str:
    """What a task's status says went wrong: its error, else its exit code or last message."""
    status = task.Status
    if status.Err:
        return status.Err
    code = status.ContainerStatus.ExitCode if status.ContainerStatus else None
    if status.State == TaskState.COMPLETE:
        return "it exited (0) while it should have kept running"
    return f"exit code {code}" if code is not None else status.Message or status.State.value
