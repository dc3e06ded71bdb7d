"""``/tasks``: list with Docker's filters, and inspect."""

from aiohttp import web

from .app import Route, agent_of, filter_query, json_response, query_str
from .errors import BadRequest, NotFound
from .filters import match_label, parse_filters
from .lookup import resolve
from .models import Task, TaskState
from .nodes import find_node
from .services import find_service

def find_task(tasks: dict[str, Task], ref: str) -> Task:
    """By full ID or a unique ID prefix: tasks have no names to look up."""
    return resolve("task", ref, tasks.values(), lambda t: t.ID, lambda t: [])


FILTERS = {"id", "name", "service", "node", "desired-state", "label", "_up-to-date"}
_DESIRED = {"running": {TaskState.RUNNING, TaskState.READY}, "shutdown": {TaskState.SHUTDOWN, TaskState.REMOVE},
            "accepted": {TaskState.ACCEPTED}}


async def list_tasks(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    filters = parse_filters(query_str(request, "filters"), FILTERS)
    for value in filters.get("desired-state", []):
        if value not in _DESIRED:
            raise BadRequest(f"invalid filter 'desired-state={value}' (want running, shutdown or accepted)")
    await mgr.cache.barrier()
    state = mgr.cache.state
    candidates: list[Task]
    if "service" in filters:
        ids: set[str] = set()
        for ref in filters["service"]:
            try:
                ids |= state.tasks_by_service.get(find_service(state.services, ref).ID, set())
            except NotFound:
                # Tasks of a removed service can still be listed by its ID.
                ids |= state.tasks_by_service.get(ref, set())
        candidates = [state.tasks[i] for i in ids if i in state.tasks]
    else:
        candidates = list(state.tasks.values())
    if "node" in filters:
        node_ids = set()
        for ref in filters["node"]:
            try:
                node_ids.add(find_node(state.nodes, ref).ID)
            except NotFound:
                node_ids.add(ref)
        candidates = [t for t in candidates if t.NodeID in node_ids]
    out = []
    for task in candidates:
        if "id" in filters and not any(task.ID.startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(task.Name.startswith(v) for v in filters["name"]):
            continue
        if "desired-state" in filters and not any(task.DesiredState in _DESIRED[v] for v in filters["desired-state"]):
            continue
        if "label" in filters:
            # A task carries its service's labels, as in Swarm (`docker stack ps` finds tasks by them).
            service = state.services.get(task.ServiceID)
            labels = {**((service.Spec.Labels or {}) if service else {}), **task.Labels}
            if not match_label(labels, filters["label"]):
                continue
        if "_up-to-date" in filters:
            service = state.services.get(task.ServiceID)
            if service is None or task.Spec != service.Spec.TaskTemplate:
                continue
        out.append(state.task_wire(task))
    out.sort(key=lambda t: (t["ServiceID"], t.get("Slot") or 0, t["CreatedAt"]))
    return json_response(out)


async def inspect_task(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    return json_response(find_task(mgr.cache.state.tasks, request.match_info["id"]).wire())


ROUTES = [
    Route("GET", "/tasks", list_tasks, "manager", query=(filter_query(FILTERS),)),
    Route("GET", "/tasks/{id}", inspect_task, "manager"),
]
