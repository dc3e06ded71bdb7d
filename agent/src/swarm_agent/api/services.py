"""``/services``: create, list (with ``status=true`` counts), inspect, update with ``version``, remove."""

from typing import TYPE_CHECKING

from aiohttp import web

from ..api.models import (
    EndpointVirtualIP,
    NetworkAttachmentConfig,
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
from ..manager.allocator import ingress_network
from ..manager.ipam import AddressBook, IpamError, with_prefix
from ..manager.ports import PortInUse, allocate
from ..manager.restart import is_live
from ..pki import new_node_id
from ..store.state import AddressConflict, NameConflict, PortConflict
from ..store.state import Conflict as StoreConflict
from .app import VERSION, Query, Route, agent_of, filter_query, flag, json_response, query_bool, query_str, query_version, read_body
from .errors import ApiError, BadRequest, Conflict
from .filters import match_label, parse_filters
from .lookup import resolve
from .networks import find_network
from .secrets import resolve_references

if TYPE_CHECKING:
    from ..manager.manager import Manager
    from ..store.state import Snapshot


FILTERS = {"id", "name", "label", "mode"}


def find_service(services: dict[str, Service], ref: str) -> Service:
    return resolve("service", ref, services.values(), lambda s: s.ID, lambda s: [s.Spec.Name])


def attach_networks(spec: ServiceSpec, state: "Snapshot") -> None:
    """Resolve the spec's network references to IDs, as Docker stores them; refuse unknown or doubled ones."""
    if spec.Networks and not spec.TaskTemplate.Networks:
        # The service-level field is deprecated in the Engine API; tasks read the template's.
        spec.TaskTemplate.Networks, spec.Networks = spec.Networks, None
    resolved: list[NetworkAttachmentConfig] = []
    for i, attachment in enumerate(spec.TaskTemplate.Networks or []):
        field = f"TaskTemplate.Networks.{i}.Target"
        try:
            network = find_network(state.networks, attachment.Target)
        except ApiError as exc:
            raise BadRequest(f"{field}: {exc.message}") from None
        if network.Spec.Ingress:
            raise BadRequest(f"{field}: service cannot be explicitly attached to the ingress network {network.Spec.Name!r}")
        if any(r.Target == network.ID for r in resolved):
            raise BadRequest(f"{field}: network {network.Spec.Name} is attached twice")
        resolved.append(attachment.model_copy(update={"Target": network.ID}))
    spec.TaskTemplate.Networks = resolved or None


def needs_cache(spec: ServiceSpec) -> bool:
    """The spec names networks, secrets or configs, or publishes on the ingress network: creating it reads
    the networks', secrets' or configs' state."""
    container = spec.TaskTemplate.ContainerSpec
    return bool(spec.TaskTemplate.Networks or spec.Networks or container.Secrets or container.Configs
                or any(p.PublishMode == "ingress" for p in spec.EndpointSpec.Ports or []))


def virtual_ips(
    spec: ServiceSpec, ports_published: bool, state: "Snapshot", previous: ServiceEndpoint | None
) -> list[EndpointVirtualIP]:
    """One VIP per network of a VIP-mode service (and on ingress when it publishes), kept across updates."""
    wanted = [a.Target for a in spec.TaskTemplate.Networks or []] if spec.EndpointSpec.Mode == "vip" else []
    ingress = ingress_network(state.networks.values())
    if ports_published:
        if ingress is None:
            raise BadRequest("EndpointSpec.Ports: no ingress network exists to publish ingress ports on")
        wanted.append(ingress.ID)
    kept = {v.NetworkID: v for v in previous.VirtualIPs or []} if previous else {}
    out = []
    for network_id in wanted:
        if network_id in kept:
            out.append(kept[network_id])
            continue
        network = state.networks[network_id]
        try:
            ip = AddressBook(network.Subnet, network.Gateway).take(state.addresses.get(network_id, {}).keys())
        except IpamError as exc:
            raise BadRequest(f"TaskTemplate.Networks: network {network.Spec.Name}: {exc}") from None
        out.append(EndpointVirtualIP(NetworkID=network_id, Addr=with_prefix(ip, network.Subnet)))
    return out


async def endpoint_for(
    mgr: "Manager", spec: ServiceSpec, service_id: str, previous: ServiceEndpoint | None = None
) -> ServiceEndpoint:
    """The endpoint with its published ports resolved (given ones checked, missing ingress ones assigned)
    and its virtual IPs allocated against the cache, which the caller has brought up to date."""
    try:
        ports = allocate(
            spec.EndpointSpec.Ports or [], await mgr.store.ingress_ports(), service_id,
            previous.Ports or [] if previous else [],
        )
    except PortInUse as exc:
        raise BadRequest(f"EndpointSpec.Ports: {exc}") from None
    vips = virtual_ips(spec, any(p.PublishMode == "ingress" for p in ports), mgr.cache.state, previous)
    return ServiceEndpoint(Spec=spec.EndpointSpec, Ports=ports or None, VirtualIPs=vips or None)


def _claim_failed(exc: StoreConflict, name: str) -> ApiError:
    if isinstance(exc, NameConflict):
        return Conflict(f"service {name} already exists: name conflicts with an existing object")
    if isinstance(exc, AddressConflict):
        return Conflict(f"TaskTemplate.Networks: {exc}; another service took it meanwhile, try again")
    return BadRequest(f"EndpointSpec.Ports: {exc}")


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
    # One pass: a service's tasks include its history (five per slot by default), tens of thousands of them in a
    # large swarm, and `docker service ls` asks this of every service.
    running = completed = live = 0
    for t in tasks:
        if t.Status.State == TaskState.COMPLETE:
            completed += 1
        elif is_live(t):
            live += 1
            running += t.Status.State == TaskState.RUNNING and t.NodeID in ready_nodes
    if mode.Replicated is not None:
        desired = mode.Replicated.Replicas
    elif mode.ReplicatedJob is not None:
        desired = min(mode.ReplicatedJob.MaxConcurrent, max((mode.ReplicatedJob.TotalCompletions or 0) - completed, 0))
    else:
        desired = live
    out = service.model_copy()
    out.ServiceStatus = ServiceTaskCounts(RunningTasks=running, DesiredTasks=desired, CompletedTasks=completed)
    return out


async def list_services(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    filters = parse_filters(query_str(request, "filters"), FILTERS)
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
    spec: ServiceSpec = await read_body(request, "service spec")
    if needs_cache(spec):
        # Read-your-writes for the networks, secrets and configs (a stack creates them just before its
        # services); a service using none needs no cache, and the barrier's wait on a busy store is most
        # of a create's latency.
        await mgr.cache.barrier()
    attach_networks(spec, mgr.cache.state)
    resolve_references(spec, mgr.cache.state)
    service_id = new_node_id()
    if not spec.Name:
        spec.Name = f"service-{service_id[:8]}"
    service = Service(
        ID=service_id, Spec=spec, Endpoint=await endpoint_for(mgr, spec, service_id),
        JobStatus=ServiceJobStatus() if spec.Mode.is_job else None,
    )
    try:
        await mgr.store.create(service)
    except (NameConflict, PortConflict, AddressConflict) as exc:
        raise _claim_failed(exc, spec.Name) from None
    mgr.log_event("service created", service=service.ID, name=spec.Name)
    return json_response({"ID": service.ID, "Warnings": None}, status=201)


async def update_service(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    version = query_version(request)
    rollback = query_str(request, "rollback")
    if rollback not in ("", "previous"):
        raise BadRequest(f"invalid rollback value {rollback!r}: only 'previous' is allowed")
    spec: ServiceSpec = await read_body(request, "service spec")
    await mgr.cache.barrier()
    current = find_service(mgr.cache.state.services, request.match_info["id"])
    if rollback:
        if current.PreviousSpec is None:
            raise BadRequest(f"service {current.Spec.Name} does not have a previous spec to roll back to")
        spec = current.PreviousSpec
    if not spec.Name:
        spec.Name = current.Spec.Name
    if spec.Name != current.Spec.Name:
        # Swarm's words; it answers 501, a 400 here: the request is what cannot be carried out.
        raise BadRequest(f"Name: renaming services is not supported ({current.Spec.Name} to {spec.Name})")
    if spec.Mode.kind != current.Spec.Mode.kind:
        raise BadRequest(f"service mode change is not allowed ({current.Spec.Mode.kind} to {spec.Mode.kind})")
    attach_networks(spec, mgr.cache.state)
    resolve_references(spec, mgr.cache.state)
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
    except (NameConflict, PortConflict, AddressConflict) as exc:
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
    Route("GET", "/services", list_services, "manager",
          query=(filter_query(FILTERS), flag("status", "fill ServiceStatus with running and desired task counts"))),
    Route("POST", "/services/create", create_service, "manager", body=ServiceSpec),
    Route("GET", "/services/{id}", inspect_service, "manager"),
    Route("POST", "/services/{id}/update", update_service, "manager", body=ServiceSpec,
          query=(VERSION, Query("rollback", {"type": "string", "enum": ["", "previous"]},
                                description="previous: roll back to the previous spec (the body is ignored)"))),
    Route("DELETE", "/services/{id}", remove_service, "manager"),
]
