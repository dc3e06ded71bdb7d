# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Whether a service has converged, and if not, why not, in words a user can act on.

Converged means what ``docker service create`` waits for: as many tasks as the
service wants, each running with the service's current task template, and no
rolling update still in progress.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ansible_collections.swarm.cluster.plugins.module_utils._service_spec import same

# Observed states a task passes through before it runs; anything after "running" is an end state.
_NOT_YET_RUNNING = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")
_LIVE = _NOT_YET_RUNNING + ("running",)
_UPDATE_IN_PROGRESS = ("updating", "rollback_started")
_UPDATE_STOPPED = ("paused", "rollback_paused")
# How many unconverged tasks a message names: enough to show the pattern, short enough to read.
_SHOWN_TASKS = 3


class Verdict(NamedTuple):
    done: bool
    hopeless: bool  # waiting longer cannot help (the update paused or was rolled back)
    reason: str


def describe_task(task: dict[str, Any]) -> str:
    status = task.get("Status") or {}
    name = task.get("Name") or task.get("ID", "")[:12]
    text = "task %s is %s" % (name, status.get("State", "unknown"))
    detail = status.get("Err") or status.get("Message")
    return "%s: %s" % (text, detail) if detail else text


def service_verdict(
    service: dict[str, Any], tasks: list[dict[str, Any]], desired: int, expected_template: dict[str, Any]
) -> Verdict:
    """``tasks`` are the service's tasks meant to run; ``desired`` the count it wants (ServiceStatus.DesiredTasks)."""
    name = service["Spec"]["Name"]
    template = service["Spec"]["TaskTemplate"]
    update = service.get("UpdateStatus") or {}
    state = update.get("State")
    if state in _UPDATE_STOPPED:
        return Verdict(False, True, "the update of service %s is %s: %s" % (name, state, update.get("Message", "")))
    if not same(template, expected_template):
        why = update.get("Message") or "the service was changed by someone else"
        return Verdict(False, True, "service %s no longer has the requested task template (%s): %s" % (name, state, why))
    current = [t for t in tasks if same(t.get("Spec"), template)]
    running = [t for t in current if (t.get("Status") or {}).get("State") == "running"]
    stale = [t for t in tasks if t not in current]
    if len(running) == desired and not stale and state not in _UPDATE_IN_PROGRESS:
        return Verdict(True, False, "service %s converged: %d of %d tasks running" % (name, len(running), desired))
    parts = ["%d of %d tasks running with the current spec" % (len(running), desired)]
    if stale:
        parts.append("%d tasks still run the previous spec" % len(stale))
    if state in _UPDATE_IN_PROGRESS:
        parts.append("update %s" % state)
    laggards = [t for t in current if t not in running] + stale
    parts += [describe_task(t) for t in laggards[:_SHOWN_TASKS]]
    return Verdict(False, False, "service %s has not converged: %s" % (name, "; ".join(parts)))


def removal_verdict(name: str, tasks: list[dict[str, Any]]) -> Verdict:
    """A removed service has converged once none of its tasks is live any more."""
    live = [t for t in tasks if (t.get("Status") or {}).get("State") in _LIVE]
    if not live:
        return Verdict(True, False, "all tasks of service %s stopped" % name)
    shown = "; ".join(describe_task(t) for t in live[:_SHOWN_TASKS])
    return Verdict(False, False, "%d tasks of removed service %s are still live: %s" % (len(live), name, shown))
