"""Rolling updates: which slots move to the service's new spec in this tick.

Derived from the tasks alone, nothing stored: a slot is *outdated* while its
live task runs another spec than the service's template, *in flight* while its
up-to-date task (one that replaced an older spec) has not been observed
running yet. A slot whose task never got a node (no node fits it) serves
nothing, so it moves to the new spec at once, outside the batches, and does
not hold the update up. Batches follow ``UpdateConfig``: at most ``Parallelism`` slots per
batch (0 = all), the next batch only once the previous one runs and ``Delay``
has passed since the last of them reached running. Failure actions, monitor
and rollback are not handled here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from ..api.duration import SECOND
from ..api.models import Task, TaskSpec, TaskState, UpdateConfigSpec
from .restart import is_live
from .timestamps import parse_timestamp


@dataclass
class UpdateStep:
    retire: list[Task] = field(default_factory=list)  # start-first: old tasks whose replacement now runs
    replace: list[Hashable] = field(default_factory=list)  # slots whose live task moves to the new spec now
    waiting: str = ""  # why no batch started although slots are outdated ("" when one did, or none is)


def plan_update(
    slots: Mapping[Hashable, Sequence[Task]], template: TaskSpec, config: UpdateConfigSpec, now: float
) -> UpdateStep:
    """The next step of the rolling update over ``slots`` (key -> tasks, oldest first)."""
    step = UpdateStep()
    outdated: list[Hashable] = []
    settled: list[Sequence[Task]] = []  # slots that run only up-to-date live tasks
    in_flight = 0
    for key in sorted(slots, key=_slot_order):
        live = [task for task in slots[key] if is_live(task)]
        if not live:
            continue
        current = [task for task in live if task.Spec == template]
        old = [task for task in live if task.Spec != template]
        if current and old:
            # Start-first: the old task goes once its replacement is observed running.
            if any(task.Status.State == TaskState.RUNNING for task in current):
                step.retire.extend(old)
            else:
                in_flight += 1
        elif old:
            outdated.append(key)
        else:
            settled.append(slots[key])
    if not outdated:
        return step

    # Slots whose live task never got a node serve nothing: replacing them takes nothing down,
    # so they move at once and outside the batches. The rest go batch by batch.
    unplaced = [key for key in outdated if all(task.NodeID is None for task in slots[key] if is_live(task))]
    serving = [key for key in outdated if key not in unplaced]
    step.replace = unplaced
    if not serving:
        return step

    last_done = 0.0
    for history in settled:
        replaced = [task for task in history if not is_live(task) and task.Spec != template]
        if not replaced:
            continue  # never updated: not part of a batch
        for task in history:
            if not is_live(task):
                continue
            if task.Status.State == TaskState.RUNNING:
                last_done = max(last_done, parse_timestamp(task.Status.Timestamp))
            elif task.NodeID is not None or replaced[-1].NodeID is not None:
                in_flight += 1
            # else: the slot had no node before the update either (no node fits it); waiting
            # for it would stall the update for good.
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
