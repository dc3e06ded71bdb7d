"""Builders for nodes, services and tasks, and an in-memory control loop for orchestrator and scheduler tests.

The loop plays the leader (reconcile, apply, schedule, apply) and the workers
(assigned tasks start, stopped tasks report shutdown), the way the real control
loop and workers move a task through its states, so tests can run a cluster to
its fixed point without etcd or Docker.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from swarm_agent.api.models import (
    EndpointSettings,
    GlobalMode,
    Node,
    NodeDescription,
    NodeSpec,
    NodeStatus,
    PlacementPreference,
    PlacementSpec,
    PlatformInfo,
    PortConfig,
    ReplicatedMode,
    ResourceObject,
    ResourceRequirements,
    RestartPolicySpec,
    Service,
    ServiceMode,
    ServiceSpec,
    SpreadOver,
    Task,
    TaskSpec,
    TaskState,
    TaskStatus,
    UpdateConfigSpec,
)
from swarm_agent.manager.orchestrator import Plan, reconcile
from swarm_agent.manager.restart import is_live
from swarm_agent.manager.scheduler import Decision, schedule
from swarm_agent.manager.timestamps import format_timestamp

T0 = 1_700_000_000.0
SECOND_NS = 1_000_000_000


def make_node(
    node_id: str,
    *,
    state: str = "ready",
    availability: str = "active",
    labels: dict[str, str] | None = None,
    cpus: float | None = None,
    memory: int | None = None,
    arch: str = "x86_64",
    os: str = "linux",
    role: str = "worker",
) -> Node:
    return Node(
        ID=node_id,
        Spec=NodeSpec(Labels=labels or {}, Availability=availability, Role=role),
        Description=NodeDescription(
            Hostname=f"host-{node_id}",
            Platform=PlatformInfo(Architecture=arch, OS=os),
            Resources=ResourceObject(NanoCPUs=int(cpus * 1e9) if cpus is not None else None, MemoryBytes=memory),
        ),
        Status=NodeStatus(State=state),
    )


def make_spec(
    *,
    image: str = "busybox",
    constraints: list[str] | None = None,
    spread: list[str] | None = None,
    max_replicas: int | None = None,
    platforms: list[tuple[str, str]] | None = None,
    cpus: float | None = None,
    memory: int | None = None,
    restart: RestartPolicySpec | None = None,
) -> TaskSpec:
    placement = None
    if constraints or spread or max_replicas or platforms:
        placement = PlacementSpec(
            Constraints=constraints,
            Preferences=[PlacementPreference(Spread=SpreadOver(SpreadDescriptor=d)) for d in spread or []] or None,
            MaxReplicas=max_replicas,
            Platforms=[PlatformInfo(Architecture=a, OS=o) for a, o in platforms] if platforms else None,
        )
    resources = None
    if cpus is not None or memory is not None:
        resources = ResourceRequirements(
            Reservations=ResourceObject(NanoCPUs=int(cpus * 1e9) if cpus is not None else None, MemoryBytes=memory)
        )
    return TaskSpec.model_validate(
        {
            "ContainerSpec": {"Image": image},
            "Placement": placement,
            "Resources": resources,
            "RestartPolicy": restart or RestartPolicySpec(),
        }
    )


def make_service(
    service_id: str,
    *,
    replicas: int | None = 1,
    is_global: bool = False,
    spec: TaskSpec | None = None,
    update: UpdateConfigSpec | None = None,
    host_ports: Iterable[int] = (),
) -> Service:
    mode = ServiceMode(Global=GlobalMode()) if is_global else ServiceMode(Replicated=ReplicatedMode(Replicas=replicas))
    ports = [PortConfig(TargetPort=80, PublishedPort=p, PublishMode="host") for p in host_ports]
    return Service(
        ID=service_id,
        Spec=ServiceSpec(
            Name=f"svc-{service_id}",
            TaskTemplate=spec or make_spec(),
            Mode=mode,
            UpdateConfig=update or UpdateConfigSpec(),
            EndpointSpec=EndpointSettings(Ports=ports or None),
        ),
    )


def make_task(
    task_id: str,
    service: Service,
    *,
    slot: int | None = None,
    node: str | None = None,
    state: TaskState = TaskState.RUNNING,
    desired: TaskState = TaskState.RUNNING,
    at: float = T0,
    ended_at: float | None = None,
    spec: TaskSpec | None = None,
) -> Task:
    stamp = format_timestamp(at)
    return Task(
        ID=task_id,
        CreatedAt=stamp,
        UpdatedAt=stamp,
        Name=f"{service.Spec.Name}.{slot if slot is not None else node}",
        Spec=(spec or service.Spec.TaskTemplate).model_copy(deep=True),
        ServiceID=service.ID,
        Slot=slot,
        NodeID=node,
        Status=TaskStatus(State=state, Timestamp=format_timestamp(ended_at if ended_at is not None else at)),
        DesiredState=desired,
    )


class Ids:
    """Deterministic task IDs that sort in creation order."""

    def __init__(self, prefix: str = "t") -> None:
        self._count = itertools.count(1)
        self.prefix = prefix

    def __call__(self) -> str:
        return f"{self.prefix}{next(self._count):05d}"


class Cluster:
    """An in-memory cluster driven by the real orchestrator and scheduler."""

    def __init__(
        self,
        services: Iterable[Service] = (),
        nodes: Iterable[Node] = (),
        tasks: Iterable[Task] = (),
        *,
        history_limit: int = 5,
        now: float = T0,
    ) -> None:
        self.services = {s.ID: s for s in services}
        self.nodes = {n.ID: n for n in nodes}
        self.tasks = {t.ID: t for t in tasks}
        self.history_limit = history_limit
        self.now = now
        self.new_id = Ids()
        self.decisions: list[Decision] = []
        self.running_since: dict[str, float] = {}  # what the leader's loop remembers

    # ------------------------------------------------------------ leader

    def reconcile(self) -> Plan:
        return reconcile(
            list(self.services.values()),
            list(self.tasks.values()),
            list(self.nodes.values()),
            history_limit=self.history_limit,
            now=self.now,
            new_id=self.new_id,
            running_since=self.running_since,
        )

    def apply(self, plan: Plan) -> None:
        ids = [t.ID for t in plan.create] + [t.ID for t in plan.update]
        assert len(ids) == len(set(ids)), "a task appears twice in one plan"
        assert not set(plan.delete) & set(ids), "a plan both writes and deletes a task"
        for task in plan.create:
            assert task.ID not in self.tasks
            self.tasks[task.ID] = task
        for task in plan.update:
            old = self.tasks[task.ID]
            assert task.DesiredState.rank >= old.DesiredState.rank, "desired state moved backwards"
            self.tasks[task.ID] = task
        for task_id in plan.delete:
            del self.tasks[task_id]
        for service in plan.services:
            self.services[service.ID] = service

    def orchestrate(self) -> Plan:
        """One reconcile, applied; a second reconcile of the result must have nothing to do.

        Unless the plan changed a service (a rollback puts its previous spec back): that is new
        input, as a user's change is, and the next tick acts on it.
        """
        plan = self.reconcile()
        self.apply(plan)
        again = self.reconcile()
        assert again.empty() or plan.services, f"reconcile is not idempotent: {again}"
        return plan

    def place(self) -> list[Decision]:
        pending = [
            t for t in self.tasks.values() if t.Status.State in (TaskState.NEW, TaskState.PENDING) and is_live(t)
        ]
        decisions = schedule(pending, list(self.nodes.values()), list(self.tasks.values()), self.services)
        stamp = format_timestamp(self.now)
        for decision in decisions:
            task = self.tasks[decision.task_id].model_copy(deep=True)
            if decision.node_id is not None:
                task.NodeID = decision.node_id
                task.Status = TaskStatus(State=TaskState.ASSIGNED, Timestamp=stamp)
            else:
                task.Status = TaskStatus(State=TaskState.PENDING, Timestamp=stamp, Err=decision.reason)
            self.tasks[task.ID] = task
        self.decisions = decisions
        return decisions

    # ------------------------------------------------------------ workers

    def set_state(self, task_id: str, state: TaskState) -> None:
        task = self.tasks[task_id].model_copy(deep=True)
        task.Status = TaskStatus(State=state, Timestamp=format_timestamp(self.now))
        self.tasks[task_id] = task
        if state == TaskState.RUNNING:
            self.running_since.setdefault(task_id, self.now)

    def run_workers(self) -> bool:
        """Ready nodes start what they are told to run and stop what they are told to stop."""
        changed = False
        for task in list(self.tasks.values()):
            node = self.nodes.get(task.NodeID or "")
            if node is None or node.Status.State != "ready" or task.Status.State.terminal:
                continue
            if not is_live(task):
                self.set_state(task.ID, TaskState.SHUTDOWN)
                changed = True
            elif task.DesiredState in (TaskState.RUNNING, TaskState.COMPLETE) and task.Status.State != TaskState.RUNNING:
                if task.Status.State.rank >= TaskState.ASSIGNED.rank:
                    self.set_state(task.ID, TaskState.RUNNING)
                    changed = True
        return changed

    # ------------------------------------------------------------ loop

    def tick(self) -> bool:
        """One round of leader and workers, then a second passes; True when anything changed."""
        before = {t.ID: (t.DesiredState, t.Status.State, t.NodeID) for t in self.tasks.values()}
        self.orchestrate()
        self.place()
        self.run_workers()
        self.now += 1.0
        after = {t.ID: (t.DesiredState, t.Status.State, t.NodeID) for t in self.tasks.values()}
        return before != after

    def converge(self, *, quiet_rounds: int = 3, max_rounds: int = 200, check=None) -> int:
        """Tick until ``quiet_rounds`` ticks in a row change nothing and no task waits to start.

        Returns the number of ticks; ``check(cluster)`` runs after every tick.
        """
        quiet = 0
        for rounds in range(1, max_rounds + 1):
            changed = self.tick()
            if check is not None:
                check(self)
            waiting = any(t.DesiredState == TaskState.READY for t in self.tasks.values())
            quiet = 0 if changed or waiting else quiet + 1
            if quiet >= quiet_rounds:
                return rounds
        raise AssertionError(f"no fixed point after {max_rounds} ticks")

    # ------------------------------------------------------------ views

    def live(self, service_id: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.ServiceID == service_id and is_live(t)]

    def running(self, service_id: str) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.ServiceID == service_id and is_live(t) and t.Status.State == TaskState.RUNNING
        ]

    def slot_history(self, service_id: str, slot: int) -> list[Task]:
        return sorted(
            (t for t in self.tasks.values() if t.ServiceID == service_id and t.Slot == slot),
            key=lambda t: (t.CreatedAt, t.ID),
        )
