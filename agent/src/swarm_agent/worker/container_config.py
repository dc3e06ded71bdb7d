"""How a task becomes a container: Swarm's mapping of a TaskSpec onto the Engine API.

Pure functions only, so the whole translation is unit-tested without an engine;
the executor sends the result to ``POST /containers/create`` as it is.
The mapping follows what Docker's own Swarm executor does, so that a container
started by us looks like one started by Docker in Swarm mode (names, labels,
stop behaviour) and tools that read those labels keep working.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from docker.types import (
    ContainerConfig,
    EndpointConfig,
    Healthcheck,
    HostConfig,
    LogConfig,
    Mount,
    NetworkingConfig,
    Ulimit,
)

from ..api.duration import SECOND
from ..api.models import ContainerTemplate, HealthConfig, Mount as MountSpec, ServiceEndpoint, Task

API_VERSION = "1.41"
"""Engine API version we speak: Docker 20.10's, which newer engines still accept."""

LABEL_PREFIX = "com.docker.swarm"
LABEL_TASK = f"{LABEL_PREFIX}.task"
LABEL_TASK_ID = f"{LABEL_PREFIX}.task.id"
LABEL_TASK_NAME = f"{LABEL_PREFIX}.task.name"
LABEL_NODE_ID = f"{LABEL_PREFIX}.node.id"
LABEL_SERVICE_ID = f"{LABEL_PREFIX}.service.id"
LABEL_SERVICE_NAME = f"{LABEL_PREFIX}.service.name"

DEFAULT_STOP_GRACE_SECONDS = 10


def container_name(task: Task) -> str:
    """Swarm's container name: ``SERVICE.SLOT.TASKID`` or ``SERVICE.NODEID.TASKID``."""
    return f"{task.Name}.{task.ID}"


def container_labels(task: Task, service_name: str, node_id: str) -> dict[str, str]:
    # Same precedence as Swarm: spec labels, then labels set on the task by the
    # orchestrator, then the system labels, which nobody may override because
    # adoption after an agent restart depends on them.
    labels: dict[str, str] = dict(task.Spec.ContainerSpec.Labels or {})
    labels.update(task.Labels or {})
    labels.update(
        {
            LABEL_TASK: "",
            LABEL_TASK_ID: task.ID,
            LABEL_TASK_NAME: container_name(task),
            LABEL_NODE_ID: node_id,
            LABEL_SERVICE_ID: task.ServiceID,
            LABEL_SERVICE_NAME: service_name,
        }
    )
    return labels


def extra_hosts(hosts: list[str] | None) -> list[str] | None:
    """Swarm's ``IP HOSTNAME [ALIASES...]`` entries as the engine's ``HOST:IP`` list."""
    out: list[str] = []
    for entry in hosts or []:
        fields = entry.split()
        if len(fields) < 2:
            # An entry without a name cannot go into /etc/hosts; Swarm skips it too.
            continue
        address, names = fields[0], fields[1:]
        out.extend(f"{name}:{address}" for name in names)
    return out or None


def engine_mount(spec: MountSpec) -> Mount:
    options: dict[str, Any] = {}
    if spec.Type == "bind" and spec.BindOptions is not None:
        options["propagation"] = spec.BindOptions.Propagation
    elif spec.Type == "volume" and spec.VolumeOptions is not None:
        volume = spec.VolumeOptions
        options["no_copy"] = bool(volume.NoCopy)
        options["labels"] = volume.Labels
        if volume.DriverConfig is not None:
            options["driver_config"] = {"Name": volume.DriverConfig.Name, "Options": volume.DriverConfig.Options or {}}
    elif spec.Type == "tmpfs" and spec.TmpfsOptions is not None:
        options["tmpfs_size"] = spec.TmpfsOptions.SizeBytes
        options["tmpfs_mode"] = spec.TmpfsOptions.Mode
    mount = Mount(
        target=spec.Target,
        source=spec.Source or "",
        type=spec.Type,
        read_only=bool(spec.ReadOnly),
        consistency=spec.Consistency,
        **options,
    )
    if spec.Type == "bind" and spec.BindOptions is not None and spec.BindOptions.NonRecursive:
        # docker.types.Mount has no argument for it; the wire field exists since API 1.40.
        mount.setdefault("BindOptions", {})["NonRecursive"] = True
    return mount


def engine_healthcheck(spec: HealthConfig | None) -> Healthcheck | None:
    if spec is None:
        return None
    # Zero durations mean "the engine's default", exactly as in the container API.
    return Healthcheck(
        test=spec.Test,
        interval=spec.Interval,
        timeout=spec.Timeout,
        retries=spec.Retries,
        start_period=spec.StartPeriod,
    )


def stop_grace_seconds(spec: ContainerTemplate) -> int:
    """The engine counts whole seconds; round up so the task gets at least its grace period."""
    if spec.StopGracePeriod is None:
        return DEFAULT_STOP_GRACE_SECONDS
    return math.ceil(spec.StopGracePeriod / SECOND)


def _selinux_options(spec: ContainerTemplate) -> list[str] | None:
    context = (spec.Privileges.SELinuxContext if spec.Privileges else None) or {}
    if not context:
        return None
    if context.get("Disable"):
        return ["label=disable"]
    options = [
        f"label={kind.lower()}:{context[kind]}" for kind in ("User", "Role", "Type", "Level") if context.get(kind)
    ]
    return options or None


def _entrypoint_and_cmd(spec: ContainerTemplate) -> tuple[list[str] | None, list[str] | None]:
    # Command replaces the image's entrypoint and Args become its arguments; with
    # Args alone the image's entrypoint is kept and only its CMD is replaced.
    if spec.Command:
        return list(spec.Command), list(spec.Args or [])
    if spec.Args:
        return None, list(spec.Args)
    return None, None


@dataclass(frozen=True)
class NetworkPlan:
    """Where a task's container joins the network: the engine network, its address and extra names."""

    engine_network: str
    address: str
    aliases: tuple[str, ...] = ()


HostPort = tuple[str, int | None, int]
"""A port published in host mode: (protocol, port on the node or None for any free one, port of the task)."""


def host_ports(endpoint: ServiceEndpoint | None) -> list[HostPort]:
    """The service's host-mode ports: bound by the engine on the node running the task, and only there."""
    return [(p.Protocol, p.PublishedPort or None, p.TargetPort)
            for p in (endpoint.Ports or [] if endpoint else []) if p.PublishMode == "host"]


def resolver_options(host_options: Sequence[str]) -> list[str] | None:
    """The resolv.conf options of a task that asks the node's resolver, or None for the engine's default.

    The engine copies the host's options into a container, and when they set ``ndots`` its embedded DNS
    answers a single-label name it does not know (``redis``) with an empty reply instead of forwarding it,
    so service names would never reach the node's resolver (sandbox nodes' resolv.conf has ndots:0, as
    every container's does). So: the host's options without ndots; ``timeout:5``, the resolver's default,
    when nothing else is left, since no options at all would mean the host's again."""
    if not any(option.startswith("ndots:") for option in host_options):
        return None
    return [option for option in host_options if not option.startswith("ndots:")] or ["timeout:5"]


def host_config(task: Task, api_version: str = API_VERSION, networks: Sequence[NetworkPlan] = (),
                resolvers: Sequence[str] = (), ports: Sequence[HostPort] = (),
                files: Sequence[MountSpec] = (), dns_options: Sequence[str] | None = None) -> HostConfig:
    """``files``: the read-only bind mounts of the task's secrets and configs (worker/secret_files.py);
    ``dns_options``: resolv.conf options for a task using ``resolvers`` (see resolver_options)."""
    spec = task.Spec.ContainerSpec
    mounts = [*(spec.Mounts or []), *files]
    resources = task.Spec.Resources
    limits = resources.Limits if resources else None
    reservations = resources.Reservations if resources else None
    dns = spec.DNSConfig
    log_driver = task.Spec.LogDriver
    return HostConfig(
        api_version,
        # Restarts belong to the orchestrator, which replaces a dead task with a new one.
        restart_policy={"Name": "no"},
        mounts=[engine_mount(m) for m in mounts] if mounts else None,
        extra_hosts=extra_hosts(spec.Hosts),
        # The node's resolver answers service names; a spec's own nameservers win, as in Swarm.
        dns=(dns.Nameservers if dns and dns.Nameservers else list(resolvers) or None),
        network_mode=networks[0].engine_network if networks else None,
        port_bindings={f"{target}/{proto}": published for proto, published, target in ports} or None,
        dns_search=dns.Search if dns else None,
        dns_opt=dns.Options if dns and dns.Options else (list(dns_options) if resolvers and dns_options else None),
        init=spec.Init,
        sysctls=spec.Sysctls or None,
        cap_add=spec.CapabilityAdd or None,
        cap_drop=spec.CapabilityDrop or None,
        ulimits=[Ulimit(name=u.Name, soft=u.Soft, hard=u.Hard) for u in spec.Ulimits] if spec.Ulimits else None,
        read_only=spec.ReadOnly,
        group_add=spec.Groups or None,
        security_opt=_selinux_options(spec),
        isolation=spec.Isolation or None,
        nano_cpus=(limits.NanoCPUs or None) if limits else None,
        mem_limit=(limits.MemoryBytes or None) if limits else None,
        pids_limit=(limits.Pids or None) if limits else None,
        mem_reservation=(reservations.MemoryBytes or None) if reservations else None,
        log_config=LogConfig(type=log_driver.Name, config=log_driver.Options or {})
        if log_driver and log_driver.Name
        else None,
    )


def endpoint_config(plan: NetworkPlan, task: Task, api_version: str = API_VERSION) -> EndpointConfig:
    # Docker's Swarm executor gives each task its short task ID as an alias too.
    return EndpointConfig(api_version, aliases=[*plan.aliases, task.ID[:12]] or None, links=None,
                          ipv4_address=plan.address, ipv6_address=None, link_local_ips=None, driver_opt=None)


def container_config(task: Task, service_name: str, node_id: str, api_version: str = API_VERSION,
                     networks: Sequence[NetworkPlan] = (), resolvers: Sequence[str] = (),
                     ports: Sequence[HostPort] = (), files: Sequence[MountSpec] = (),
                     dns_options: Sequence[str] | None = None) -> ContainerConfig:
    """The body of ``POST /containers/create`` for this task on node ``node_id``; the container starts on
    the first of ``networks`` (the executor connects the others before starting it)."""
    spec = task.Spec.ContainerSpec
    entrypoint, cmd = _entrypoint_and_cmd(spec)
    return ContainerConfig(
        api_version,
        image=spec.Image,
        command=cmd,
        entrypoint=entrypoint,
        hostname=spec.Hostname or None,
        user=spec.User or None,
        detach=True,
        stdin_open=bool(spec.OpenStdin),
        tty=bool(spec.TTY),
        environment=list(spec.Env) if spec.Env else None,
        working_dir=spec.Dir or None,
        labels=container_labels(task, service_name, node_id),
        stop_signal=spec.StopSignal or None,
        stop_timeout=stop_grace_seconds(spec),
        healthcheck=engine_healthcheck(spec.HealthCheck),
        ports=[(target, proto) for proto, _, target in ports] or None,
        host_config=host_config(task, api_version, networks, resolvers, ports, files, dns_options),
        networking_config=NetworkingConfig({networks[0].engine_network: endpoint_config(networks[0], task, api_version)})
        if networks else None,
    )
