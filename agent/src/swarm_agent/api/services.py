"""``/services``: create, list (with ``status=true`` counts), inspect, update with ``version``, remove."""

from typing import TYPE_CHECKING

from aiohttp import web

from ..api.models import (
    ObjectVersion,
    Service,
    ServiceEndpoint,
    ServiceJobStatus,
    ServiceSpec,
    ServiceTaskCounts,
    ServiceUpdateStatus,
    TaskState,
    now,
)
from ..manager.ports import PortInUse, allocate
from ..manager.restart import is_live
from ..pki import new_node_id
from ..store.state import Conflict as StoreConflict
from ..store.state import NameConflict, PortConflict
from .app import Route, agent_of, json_response, query_bool, query_version, read_model
from .errors import ApiError, BadRequest, Conflict
from .filters import match_label, parse_filters
from .lookup import resolve

if TYPE_CHECKING:
    from ..manager.manager import Manager
    from ..store.state import Snapshot


def find_service(services: dict[str, Service], ref: str) -> Service:
    return resolve("service", ref, services.values(), lambda s: s.ID, lambda s: [s.Spec.Name])


async def endpoint_for(
    mgr: "Manager", spec: ServiceSpec, service_id: str, previous: ServiceEndpoint | None = None
) -> ServiceEndpoint:
    """The endpoint with its published ports resolved: given ones checked, missing ingress ones assigned."""
    try:
        ports = allocate(
            spec.EndpointSpec.Ports or [], await mgr.store.ingress_ports(), service_id,
            previous.Ports or [] if previous else [],
        )
    except PortInUse as exc:
        raise BadRequest(f"EndpointSpec.Ports: {exc}") from None
    return ServiceEndpoint(Spec=spec.EndpointSpec, Ports=ports or None)


def _claim_failed(exc: StoreConflict, name: str) -> ApiError:
    if isinstance(exc, NameConflict):
        return Conflict(f"service {name} already exists: name conflicts with an existing object")
    return BadRequest(f"EndpointSpec.Ports: {exc}")


def check_supported(spec: ServiceSpec) -> None:
    """Refuse what this cluster cannot run yet, before anything is stored, rather than store a service that never runs."""
    networks = [n.Target for n in (spec.TaskTemplate.Networks or []) + (spec.Networks or [])]
    if networks:
        raise BadRequest(f"network {networks[0]} not found: this cluster has no overlay networks yet")
    container = spec.TaskTemplate.ContainerSpec
    for secret in container.Secrets or []:
        raise BadRequest(f"secret {secret.SecretName or secret.SecretID} not found")
    for config in container.Configs or []:
        raise BadRequest(f"config {config.ConfigName or config.ConfigID} not found")


def with_status(service: Service, state: "Snapshot", ready_nodes: set[str]) -> Service:
    """Fill ServiceStatus as Docker does for ``status=true``: running tasks on live nodes, and the desired count.

    For a job only the tasks of its current iteration count; desired are those still to complete
    (a replicated job's capped by MaxConcurrent), which is what the CLI's "N/M (K/L completed)" reads.
    """
    tasks = [state.tasks[t] for t in state.tasks_by_service.get(service.ID, ())]
    mode = service.Spec.Mode
    if mode.is_job:
        iteration = service.JobStatus.JobIteration.Index if service.JobStatus else 0
        tasks = [t for t in tasks if t.JobIteration is not None and t.JobIteration.Index == iteration]
    running = sum(
        1
        for t in tasks
        if t.Status.State == TaskState.RUNNING and is_live(t) and t.NodeID in ready_nodes
    )
    completed = sum(1 for t in tasks if t.Status.State == TaskState.COMPLETE)
    if mode.Replicated is not None:
        desired = mode.Replicated.Replicas
    elif mode.ReplicatedJob is not None:
        desired = min(mode.ReplicatedJob.MaxConcurrent, max((mode.ReplicatedJob.TotalCompletions or 0) - completed, 0))
    else:
        desired = sum(1 for t in tasks if is_live(t) and t.Status.State != TaskState.COMPLETE)
    out = service.model_copy()
    out.ServiceStatus = ServiceTaskCounts(RunningTasks=running, DesiredTasks=desired, CompletedTasks=completed)
    return out


async def list_services(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    filters = parse_filters(request.query.get("filters"), {"id", "name", "label", "mode"})
    status = query_bool(request, "status")
    await mgr.cache.barrier()
    state = mgr.cache.state
    ready_nodes = {n.ID for n in state.nodes.values() if n.Status.State == "ready"}
    out = []
    for svc in state.services.values():
        if "id" in filters and not any(svc.ID.startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(svc.Spec.Name.startswith(v) for v in filters["name"]):
            continue
        if "label" in filters and not match_label(svc.Spec.Labels or {}, filters["label"]):
            continue
        if "mode" in filters and ("global" if svc.Spec.Mode.is_global else "replicated") not in filters["mode"]:
            continue
        out.append((with_status(svc, state, ready_nodes) if status else svc).wire())
    out.sort(key=lambda s: s["Spec"]["Name"])
    return json_response(out)


async def inspect_service(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    return json_response(find_service(mgr.cache.state.services, request.match_info["id"]).wire())


async def create_service(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    spec: ServiceSpec = await read_model(request, ServiceSpec, "service spec")
    check_supported(spec)
    service_id = new_node_id()
    if not spec.Name:
        spec.Name = f"service-{service_id[:8]}"
    service = Service(
        ID=service_id, Spec=spec, Endpoint=await endpoint_for(mgr, spec, service_id),
        JobStatus=ServiceJobStatus() if spec.Mode.is_job else None,
    )
    try:
        await mgr.store.create(service)
    except (NameConflict, PortConflict) as exc:
        raise _claim_failed(exc, spec.Name) from None
    mgr.log_event("service created", service=service.ID, name=spec.Name)
    return json_response({"ID": service.ID, "Warnings": None}, status=201)


async def update_service(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    version = query_version(request)
    rollback = request.query.get("rollback", "")
    if rollback not in ("", "previous"):
        raise BadRequest(f"invalid rollback value {rollback!r}: only 'previous' is allowed")
    spec: ServiceSpec = await read_model(request, ServiceSpec, "service spec")
    await mgr.cache.barrier()
    current = find_service(mgr.cache.state.services, request.match_info["id"])
    if rollback:
        if current.PreviousSpec is None:
            raise BadRequest(f"service {current.Spec.Name} does not have a previous spec to roll back to")
        spec = current.PreviousSpec
    if not spec.Name:
        spec.Name = current.Spec.Name
    if spec.Mode.kind != current.Spec.Mode.kind:
        raise BadRequest(f"service mode change is not allowed ({current.Spec.Mode.kind} to {spec.Mode.kind})")
    check_supported(spec)
    updated = current.model_copy(deep=True)
    updated.Version.Index = version
    if spec != current.Spec:
        updated.PreviousSpec = current.Spec
    updated.Spec = spec
    stamp = now()
    # As in Swarm: an update starts afresh (a paused one resumes), a rollback is under way at once.
    updated.UpdateStatus = (
        ServiceUpdateStatus(State="rollback_started", StartedAt=stamp, Message="manually requested rollback")
        if rollback
        else None
    )
    updated.Endpoint = await endpoint_for(mgr, spec, current.ID, current.Endpoint)
    updated.UpdatedAt = stamp
    if spec.Mode.is_job:
        # Every update of a job runs it again, as in Swarm.
        iteration = current.JobStatus.JobIteration.Index + 1 if current.JobStatus else 0
        updated.JobStatus = ServiceJobStatus(JobIteration=ObjectVersion(Index=iteration), LastExecution=stamp)
        updated.UpdateStatus = None
    try:
        await mgr.store.update(updated, previous=current)
    except (NameConflict, PortConflict) as exc:
        raise _claim_failed(exc, spec.Name) from None
    except StoreConflict:
        raise Conflict(
            f"update out of sequence: service {current.Spec.Name} is at version {current.Version.Index}, "
            f"the update was based on version {version}"
        ) from None
    mgr.log_event("service updated", service=current.ID, name=spec.Name, version=updated.Version.Index)
    return json_response({"Warnings": None})


async def remove_service(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    service = find_service(mgr.cache.state.services, request.match_info["id"])
    try:
        await mgr.store.delete(service, check_version=False)
    except StoreConflict:
        raise Conflict(f"service {service.Spec.Name} changed while being removed; try again") from None
    mgr.log_event("service removed", service=service.ID, name=service.Spec.Name)
    return web.Response(status=200)


ROUTES = [
    Route("GET", "/services", list_services, "manager"),
    Route("POST", "/services/create", create_service, "manager"),
    Route("GET", "/services/{id}", inspect_service, "manager"),
    Route("POST", "/services/{id}/update", update_service, "manager"),
    Route("DELETE", "/services/{id}", remove_service, "manager"),
]
