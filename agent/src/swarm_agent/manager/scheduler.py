"""The scheduler: choose a node for each pending task.

Pure logic: the leader's loop hands in the cluster as it is and writes the
decisions back with compare-and-swap. The filters and their explanations are
Swarm's (``no suitable node (...)``); the spread is Swarm's too: placement
preferences first, then the node with the fewest tasks of the service, then the
fewest tasks overall.

Cost: one pass over all tasks to count what each node carries, one pass over
the nodes per distinct placement (service and spec), then a heap per spread
group, so a batch costs about O(tasks + nodes * placements + pending * log nodes).
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..api.models import Node, PlatformInfo, Service, Task, TaskSpec
from .constraints import Constraint, node_value, parse_constraints
from .restart import is_live

log = logging.getLogger(__name__)

# Filter positions: the order they run in, and the index of their rejection counters.
_READY, _PLATFORM, _CONSTRAINTS, _RESOURCES, _HOST_PORTS, _MAX_REPLICAS = range(6)

_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Decision:
    task_id: str
    node_id: str | None
    reason: str  # "" when placed


def explain(rejections: Sequence[int]) -> str:
    """Swarm's wording for a task no node accepts; the filter rejecting most nodes comes first."""

    def plural(count: int) -> str:
        return "1 node" if count == 1 else f"{count} nodes"

    texts = {
        _READY: lambda n: f"{plural(n)} not available for new tasks",
        _PLATFORM: lambda n: f"unsupported platform on {plural(n)}",
        _CONSTRAINTS: lambda n: f"scheduling constraints not satisfied on {plural(n)}",
        _RESOURCES: lambda n: f"insufficient resources on {plural(n)}",
        _HOST_PORTS: lambda n: f"host-mode port already in use on {plural(n)}",
        _MAX_REPLICAS: lambda n: "max replicas per node limit exceed",
    }
    # sorted() is stable, so filters with equal counts keep their pipeline order.
    failing = sorted((i for i, n in enumerate(rejections) if n), key=lambda i: -rejections[i])
    if not failing:
        return "no suitable node"
    return "no suitable node (" + "; ".join(texts[i](rejections[i]) for i in failing) + ")"


def is_active(task: Task) -> bool:
    """A task that holds resources on its node: meant to run and not yet ended."""
    return (
        task.NodeID is not None
        and is_live(task)
        and not task.Status.State.terminal
    )


def host_ports(service: Service | None) -> frozenset[tuple[int, str]]:
    if service is None:
        return frozenset()
    return frozenset(
        (port.PublishedPort, port.Protocol)
        for port in service.Spec.EndpointSpec.Ports or []
        if port.PublishMode == "host" and port.PublishedPort
    )


def _normal_arch(arch: str) -> str:
    arch = arch.casefold()
    return _ARCH_ALIASES.get(arch, arch)


def platform_matches(wanted: Sequence[PlatformInfo], node: Node) -> bool:
    """Empty fields in a wanted platform match anything."""
    have = node.Description.Platform
    arch, os_name = _normal_arch(have.Architecture), have.OS.casefold()
    return any(
        (not p.Architecture or _normal_arch(p.Architecture) == arch) and (not p.OS or p.OS.casefold() == os_name)
        for p in wanted
    )


def _reservations(spec: TaskSpec) -> tuple[int, int]:
    reserved = spec.Resources.Reservations if spec.Resources else None
    if reserved is None:
        return 0, 0
    return reserved.NanoCPUs or 0, reserved.MemoryBytes or 0


@dataclass
class _Load:
    """What each node carries: counted once per call, then kept current as the batch places tasks."""

    nodes: dict[str, Node]
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_service: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    cpu: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    memory: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ports: dict[str, set[tuple[int, str]]] = field(default_factory=lambda: defaultdict(set))

    def add(self, node_id: str, service_id: str, spec: TaskSpec, ports: frozenset[tuple[int, str]]) -> None:
        self.total[node_id] += 1
        self.per_service[service_id][node_id] += 1
        cpu, memory = _reservations(spec)
        self.cpu[node_id] += cpu
        self.memory[node_id] += memory
        if ports:
            self.ports[node_id] |= ports


class _Placement:
    """The filters for one kind of task (a service and one version of its spec)."""

    def __init__(self, task: Task, service: Service | None) -> None:
        placement = task.Spec.Placement
        self.service_id = task.ServiceID
        self.platforms = list(placement.Platforms or []) if placement else []
        self.constraints: list[Constraint] = parse_constraints(placement.Constraints if placement else None)
        self.max_replicas = (placement.MaxReplicas or 0) if placement else 0
        self.preferences = [p.Spread.SpreadDescriptor for p in placement.Preferences or []] if placement else []
        self.cpu, self.memory = _reservations(task.Spec)
        self.ports = host_ports(service)

    def static_reject(self, node: Node) -> int | None:
        """The first filter that rejects the node whatever the batch does, or None."""
        if node.Status.State != "ready" or node.Spec.Availability != "active":
            return _READY
        if self.platforms and not platform_matches(self.platforms, node):
            return _PLATFORM
        if not all(c.matches(node) for c in self.constraints):
            return _CONSTRAINTS
        return None

    def dynamic_reject(self, node: Node, load: _Load) -> int | None:
        """The first filter that rejects the node given what is placed so far.

        Placements only add load, so a node rejected here stays rejected for
        the rest of the batch.
        """
        node_id = node.ID
        if self.cpu or self.memory:
            capacity = node.Description.Resources
            if self.cpu > (capacity.NanoCPUs or 0) - load.cpu[node_id]:
                return _RESOURCES
            if self.memory > (capacity.MemoryBytes or 0) - load.memory[node_id]:
                return _RESOURCES
        if self.ports and not self.ports.isdisjoint(load.ports.get(node_id, ())):
            return _HOST_PORTS
        if self.max_replicas and load.per_service[self.service_id].get(node_id, 0) >= self.max_replicas:
            return _MAX_REPLICAS
        return None

    def reject(self, node: Node, load: _Load) -> int | None:
        reason = self.static_reject(node)
        return reason if reason is not None else self.dynamic_reject(node, load)


def spread_value(node: Node, descriptor: str) -> str | None:
    """The group a node falls in for ``spread=descriptor``; None when it lacks the label."""
    return node_value(node, descriptor)


@dataclass(eq=False)
class _Group:
    """A spread group: nested groups, or (at the last level) a heap of nodes."""

    value: str | None
    service_tasks: int = 0  # tasks of the service on this group's nodes
    alive: int = 0  # nodes still able to take a task of this placement
    children: dict[str | None, _Group] = field(default_factory=dict)
    heap: list[tuple[int, int, str]] = field(default_factory=list)

    def order(self) -> tuple[int, bool, str]:
        return self.service_tasks, self.value is None, self.value or ""


class _Spread:
    """The candidate nodes of one placement, arranged by its spread preferences."""

    def __init__(self, placement: _Placement, candidates: list[Node], load: _Load) -> None:
        self.placement = placement
        self.root = _Group(value=None)
        self.paths: dict[str, list[_Group]] = {}
        self.failure: str | None = None
        counts = load.per_service[placement.service_id]
        for node in candidates:
            path = [self.root]
            for descriptor in placement.preferences:
                value = spread_value(node, descriptor)
                group = path[-1].children.get(value)
                if group is None:
                    group = path[-1].children[value] = _Group(value=value)
                path.append(group)
            here = counts.get(node.ID, 0)
            for group in path:
                group.service_tasks += here
                group.alive += 1
            path[-1].heap.append((here, load.total[node.ID], node.ID))
            self.paths[node.ID] = path
        for leaf in {id(path[-1]): path[-1] for path in self.paths.values()}.values():
            heapq.heapify(leaf.heap)

    def placed(self, node_id: str) -> None:
        for group in self.paths.get(node_id, ()):
            group.service_tasks += 1

    def _drop(self, node_id: str) -> None:
        for group in self.paths[node_id]:
            group.alive -= 1

    def choose(self, load: _Load) -> str | None:
        """The best node that passes every filter now, or None when none is left."""
        while self.root.alive:
            group = self.root
            while group.children:
                group = min((g for g in group.children.values() if g.alive), key=_Group.order)
            node_id = self._pop_fitting(group, load)
            if node_id is not None:
                return node_id
        return None

    def _pop_fitting(self, leaf: _Group, load: _Load) -> str | None:
        counts = load.per_service[self.placement.service_id]
        heap = leaf.heap
        while heap:
            entry = heap[0]
            node_id = entry[2]
            current = (counts.get(node_id, 0), load.total[node_id], node_id)
            if entry != current:
                # Other placements in this batch raised the node's counts; counts only grow,
                # so re-queuing it with the fresh key keeps the heap order right.
                heapq.heapreplace(heap, current)
                continue
            if self.placement.dynamic_reject(load.nodes[node_id], load) is not None:
                heapq.heappop(heap)
                self._drop(node_id)
                continue
            return node_id
        return None


def _place_key(task: Task) -> tuple[str, str, str]:
    spec = task.Spec
    placement = spec.Placement.model_dump_json() if spec.Placement else ""
    resources = spec.Resources.model_dump_json() if spec.Resources else ""
    return task.ServiceID, placement, resources


def schedule(
    pending: Sequence[Task],
    nodes: Sequence[Node],
    tasks: Sequence[Task],
    services: Mapping[str, Service],
) -> list[Decision]:
    """Decide a node for each pending task, as one batch.

    ``pending`` are tasks in state new or pending. Most have no NodeID yet; a
    pending task whose NodeID is already set (a global service's task, bound
    to its node by the orchestrator) is only checked against that node: the
    decision then names that node, or gives the reason it cannot run there
    yet. ``tasks`` is every task, to count what each node already carries
    (pending tasks in it are ignored). Each placement in the batch counts
    against the ones after it: resources, host ports, replicas per node, and
    spread.
    """
    pending_ids = {task.ID for task in pending}
    load = _Load(nodes={node.ID: node for node in nodes})
    ports_of: dict[str, frozenset[tuple[int, str]]] = {}

    def ports_for(service_id: str) -> frozenset[tuple[int, str]]:
        if service_id not in ports_of:
            ports_of[service_id] = host_ports(services.get(service_id))
        return ports_of[service_id]

    for task in tasks:
        if task.ID not in pending_ids and is_active(task) and task.NodeID in load.nodes:
            load.add(task.NodeID, task.ServiceID, task.Spec, ports_for(task.ServiceID))

    placements: dict[tuple[str, str, str], _Placement] = {}
    spreads: dict[tuple[str, str, str], _Spread] = {}
    spreads_of_service: dict[str, list[_Spread]] = defaultdict(list)
    static_rejections: dict[tuple[str, str, str], list[int]] = {}
    decisions: list[Decision] = []

    for task in pending:
        key = _place_key(task)
        placement = placements.get(key)
        if placement is None:
            placement = placements[key] = _Placement(task, services.get(task.ServiceID))

        if task.NodeID is not None:
            node = load.nodes.get(task.NodeID)
            reason = _READY if node is None else placement.reject(node, load)
            if reason is not None:
                rejections = [0] * 6
                rejections[reason] = 1
                decisions.append(Decision(task.ID, None, explain(rejections)))
                continue
            node_id = task.NodeID
        else:
            spread = spreads.get(key)
            if spread is None:
                rejections = [0] * 6
                candidates = []
                for node in nodes:
                    reason = placement.static_reject(node)
                    if reason is None:
                        candidates.append(node)
                    else:
                        rejections[reason] += 1
                spread = spreads[key] = _Spread(placement, candidates, load)
                spreads_of_service[task.ServiceID].append(spread)
                static_rejections[key] = rejections
            chosen = None
            if spread.failure is None:
                chosen = spread.choose(load)
                if chosen is None:
                    rejections = list(static_rejections[key])
                    for node_id in spread.paths:
                        reason = placement.dynamic_reject(load.nodes[node_id], load)
                        if reason is not None:
                            rejections[reason] += 1
                    # Placements only add load: every later task of this kind fails the same way.
                    spread.failure = explain(rejections)
                    log.info("no node for task %s of service %s: %s", task.ID, task.ServiceID, spread.failure)
            if chosen is None:
                decisions.append(Decision(task.ID, None, spread.failure or explain([0] * 6)))
                continue
            node_id = chosen

        load.add(node_id, task.ServiceID, task.Spec, placement.ports)
        for spread in spreads_of_service[task.ServiceID]:
            spread.placed(node_id)
        decisions.append(Decision(task.ID, node_id, ""))
    return decisions
