from collections import Counter

import pytest
from cluster_sim import T0, Cluster, Ids, make_node, make_service, make_spec, make_task
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_agent.api.models import RestartPolicySpec, Service, ServiceUpdateStatus, TaskState, UpdateConfigSpec
from swarm_agent.manager.constraints import parse_constraints
from swarm_agent.manager.orchestrator import Plan, reconcile
from swarm_agent.manager.restart import is_live
from swarm_agent.manager.timestamps import format_timestamp, parse_timestamp

S = 1_000_000_000  # one second in nanoseconds

R, SD, F, C = TaskState.RUNNING, TaskState.SHUTDOWN, TaskState.FAILED, TaskState.COMPLETE


def once(services, tasks, nodes, *, now: float = T0 + 100, history_limit: int = 5) -> Plan:
    return reconcile(services, tasks, nodes, history_limit=history_limit, now=now, new_id=Ids("new"))


def desired(plan: Plan) -> dict[str, TaskState]:
    return {t.ID: t.DesiredState for t in plan.update}


def with_policy(**policy) -> Service:
    return make_service("s", replicas=1, spec=make_spec(restart=RestartPolicySpec(**policy)))


# ------------------------------------------------------------------ scaling


def test_timestamps_round_trip() -> None:
    assert parse_timestamp(format_timestamp(T0 + 0.25)) == T0 + 0.25
    assert parse_timestamp("2023-11-14T22:13:20.123456789Z") == pytest.approx(1700000000.123456)
    assert parse_timestamp("garbage") == 0.0


def test_scale_up_fills_lowest_free_slots_with_new_tasks() -> None:
    service = make_service("s", replicas=4)
    tasks = [
        make_task("a", service, slot=2, node="n1"),
        make_task("b", service, slot=1, node="n1", state=SD, desired=SD),  # slot 1 was scaled down earlier
    ]
    plan = once([service], tasks, [make_node("n1")], now=T0 + 10)
    assert sorted(t.Slot for t in plan.create) == [1, 3, 4]
    new = next(t for t in plan.create if t.Slot == 3)
    assert new.Name == "svc-s.3" and new.ServiceID == "s" and new.NodeID is None
    assert new.Spec == service.Spec.TaskTemplate and new.Spec is not service.Spec.TaskTemplate
    assert new.Status.State == TaskState.NEW and new.DesiredState == R
    assert new.CreatedAt == new.Status.Timestamp == format_timestamp(T0 + 10) and new.Labels == {}
    assert not plan.update and not plan.delete


def test_scale_down_prefers_the_most_loaded_node_then_not_running_then_highest_slot() -> None:
    service = make_service("s", replicas=3)
    tasks = [
        make_task("a1", service, slot=1, node="a"),
        make_task("a2", service, slot=2, node="a"),
        make_task("a3", service, slot=3, node="a", state=TaskState.STARTING),
        make_task("b4", service, slot=4, node="b"),
        make_task("b5", service, slot=5, node="b"),
        make_task("c6", service, slot=6, node="c"),
    ]
    nodes = [make_node(n) for n in "abc"]
    assert desired(once([service], tasks, nodes)) == {"a3": SD, "b5": SD, "a2": SD}
    service.Spec.Mode.Replicated.Replicas = 5
    assert desired(once([service], tasks, nodes)) == {"a3": SD}  # node a carries most; a3 is not running


def test_scale_down_removes_unassigned_tasks_first() -> None:
    service = make_service("s", replicas=2)
    tasks = [
        make_task("a", service, slot=1, node="n1"),
        make_task("b", service, slot=2, state=TaskState.PENDING),
        make_task("c", service, slot=3, node="n2"),
    ]
    assert desired(once([service], tasks, [make_node("n1"), make_node("n2")])) == {"b": SD}


# ------------------------------------------------------------------ restarts


def test_ended_task_is_replaced_in_its_slot() -> None:
    service = with_policy(Delay=0)
    tasks = [make_task("a", service, slot=1, node="n1", state=F, ended_at=T0 + 50)]
    plan = once([service], tasks, [make_node("n1")])
    assert desired(plan) == {"a": SD}
    [new] = plan.create
    assert (new.Slot, new.DesiredState) == (1, R)


@pytest.mark.parametrize(
    "condition, ended, restarts",
    [
        ("any", C, True),
        ("any", F, True),
        ("on-failure", F, True),
        ("on-failure", C, False),
        ("none", F, False),
        ("none", C, False),
    ],
)
def test_restart_conditions_and_slot_stays_ended(condition: str, ended: TaskState, restarts: bool) -> None:
    service = with_policy(Condition=condition, Delay=0)
    cluster = Cluster([service], [make_node("n1")], [make_task("a", service, slot=1, node="n1", state=ended)])
    cluster.converge()
    assert cluster.tasks["a"].DesiredState == SD
    assert len(cluster.running("s")) == (1 if restarts else 0)
    assert len(cluster.tasks) == (2 if restarts else 1)  # a slot kept ended is not refilled by the replica count
    if not restarts:
        # Changing the service (docker service update --force) brings the slot back.
        cluster.services["s"].Spec.TaskTemplate.ForceUpdate = 1
        cluster.converge()
        assert len(cluster.running("s")) == 1


def test_max_attempts_counts_restarts_ever_when_window_is_zero() -> None:
    service = with_policy(Delay=0, MaxAttempts=2)
    cluster = Cluster([service], [make_node("n1")])
    cluster.converge()
    for _ in range(3):
        [task] = cluster.running("s")
        cluster.set_state(task.ID, F)
        cluster.converge()
    assert cluster.running("s") == [] and len(cluster.tasks) == 3  # one run and two restarts
    assert all(t.DesiredState == SD for t in cluster.tasks.values())


def test_max_attempts_within_window() -> None:
    service = with_policy(Delay=0, MaxAttempts=1, Window=30 * S)
    nodes = [make_node("n1")]
    old = make_task("old", service, slot=1, node="n1", state=F, desired=SD, at=T0, ended_at=T0 + 10)
    recent = make_task("b", service, slot=1, node="n1", state=F, at=T0 + 11, ended_at=T0 + 60)
    # The previous failure is 50 s before this one: outside the window, so this one restarts.
    assert len(once([service], [old, recent], nodes, now=T0 + 61).create) == 1
    close = make_task("c", service, slot=1, node="n1", state=F, at=T0 + 11, ended_at=T0 + 30)
    plan = once([service], [old, close], nodes, now=T0 + 31)
    assert not plan.create and desired(plan) == {"c": SD}
    # The decision does not change as the window slides past: the slot stays ended.
    ended = [old, plan.update[0]]
    assert once([service], ended, nodes, now=T0 + 500).empty()


def test_restart_delay_makes_the_replacement_wait_ready() -> None:
    service = with_policy(Delay=10 * S)
    nodes = [make_node("n1")]
    failed = make_task("a", service, slot=1, node="n1", state=F, ended_at=T0 + 100)
    plan = once([service], [failed], nodes, now=T0 + 101)
    [new] = plan.create
    assert new.DesiredState == TaskState.READY
    state = [plan.update[0], new]
    assert once([service], state, nodes, now=T0 + 109.9).empty()
    later = once([service], state, nodes, now=T0 + 110)
    assert desired(later) == {new.ID: R} and not later.create
    # Long after the end the replacement starts at once.
    assert once([service], [failed], nodes, now=T0 + 200).create[0].DesiredState == R


def test_restart_delay_through_the_loop() -> None:
    service = with_policy(Delay=3 * S)
    cluster = Cluster([service], [make_node("n1")])
    cluster.converge()
    [task] = cluster.running("s")
    cluster.set_state(task.ID, F)
    ended_at = cluster.now
    cluster.tick()
    [waiting] = cluster.live("s")
    assert waiting.DesiredState == TaskState.READY and waiting.Status.State == TaskState.ASSIGNED
    cluster.converge()
    [running] = cluster.running("s")
    assert running.ID == waiting.ID and parse_timestamp(running.UpdatedAt) >= ended_at + 3


# ------------------------------------------------------------------ nodes


@pytest.mark.parametrize("node", [make_node("n1", state="down"), make_node("n1", availability="drain"), None])
def test_task_on_lost_node_is_replaced_right_away(node) -> None:
    service = make_service("s", replicas=1)
    tasks = [make_task("a", service, slot=1, node="n1")]
    plan = once([service], tasks, [node] if node else [])
    assert desired(plan) == {"a": SD}
    [new] = plan.create
    assert (new.Slot, new.DesiredState, new.NodeID) == (1, R, None)


def test_paused_or_unknown_node_keeps_its_tasks() -> None:
    service = make_service("s", replicas=2)
    tasks = [make_task("a", service, slot=1, node="n1"), make_task("b", service, slot=2, node="n2")]
    nodes = [make_node("n1", availability="pause"), make_node("n2", state="unknown")]
    assert once([service], tasks, nodes).empty()


def test_drain_moves_tasks_through_the_loop() -> None:
    service = make_service("s", replicas=4)
    cluster = Cluster([service], [make_node("n1"), make_node("n2")])
    cluster.converge()
    cluster.nodes["n1"] = make_node("n1", availability="drain")
    cluster.converge()
    assert Counter(t.NodeID for t in cluster.running("s")) == {"n2": 4}
    assert all(t.Status.State == SD for t in cluster.tasks.values() if t.NodeID == "n1")


def test_global_service_one_task_per_eligible_node() -> None:
    service = make_service("g", is_global=True, spec=make_spec(constraints=["node.labels.gpu!=no"]))
    nodes = [
        make_node("ok"),
        make_node("paused", availability="pause"),
        make_node("drained", availability="drain"),
        make_node("down", state="down"),
        make_node("excluded", labels={"gpu": "no"}),
    ]
    plan = once([service], [], nodes, now=T0 + 5)
    [new] = plan.create
    assert (new.NodeID, new.Slot, new.Name, new.Status.State, new.DesiredState) == (
        "ok",
        None,
        "svc-g.ok",
        TaskState.PENDING,
        R,
    )


def test_global_tasks_follow_their_nodes() -> None:
    service = make_service("g", is_global=True, spec=make_spec(constraints=["node.labels.gpu!=no"]))
    nodes = [
        make_node("paused", availability="pause"),
        make_node("drained", availability="drain"),
        make_node("down", state="down"),
        make_node("excluded", labels={"gpu": "no"}),
    ]
    tasks = [make_task(f"t-{n}", service, node=n) for n in ("paused", "drained", "down", "excluded", "removed")]
    assert desired(once([service], tasks, nodes)) == {"t-drained": SD, "t-excluded": SD, "t-removed": SD}


def test_global_task_restarts_on_its_node_and_fails_over_nowhere() -> None:
    service = make_service("g", is_global=True, spec=make_spec(restart=RestartPolicySpec(Delay=0)))
    cluster = Cluster([service], [make_node("n1"), make_node("n2")])
    cluster.converge()
    first = {t.NodeID: t.ID for t in cluster.running("g")}
    assert set(first) == {"n1", "n2"}
    cluster.set_state(first["n1"], F)
    cluster.nodes["n2"] = make_node("n2", state="down")
    cluster.converge()
    live = {t.NodeID: t for t in cluster.live("g")}
    assert live["n1"].ID != first["n1"] and live["n1"].Status.State == R
    assert live["n2"].ID == first["n2"]  # kept while its node is down


# ------------------------------------------------------------------ rolling updates


def updated_service(order: str = "stop-first", parallelism: int = 2, delay: int = 0, replicas: int = 5) -> Service:
    return make_service(
        "s", replicas=replicas, update=UpdateConfigSpec(Parallelism=parallelism, Delay=delay, Order=order)
    )


def change_image(cluster: Cluster, image: str = "busybox:new") -> None:
    cluster.services["s"].Spec.TaskTemplate.ContainerSpec.Image = image


def new_spec_count(cluster: Cluster, image: str = "busybox:new") -> tuple[int, int]:
    live = cluster.live("s")
    return sum(t.Spec.ContainerSpec.Image == image for t in live), len(live)


def test_rolling_update_stop_first_in_batches() -> None:
    cluster = Cluster([updated_service()], [make_node("n1"), make_node("n2")])
    cluster.converge()
    change_image(cluster)
    plan = cluster.orchestrate()
    assert len(plan.create) == 2 and len([t for t in plan.update if t.DesiredState == SD]) == 2
    # The new tasks wait (READY) until the old ones have stopped on their ready nodes.
    assert all(t.DesiredState == TaskState.READY for t in plan.create)
    assert cluster.reconcile().empty()
    seen = []

    def check(c: Cluster) -> None:
        fresh, live = new_spec_count(c)
        seen.append(fresh)
        in_flight = [
            t for t in c.live("s") if t.Spec.ContainerSpec.Image == "busybox:new" and t.Status.State != R
        ]
        assert len(in_flight) <= 2
        assert len(c.running("s")) <= 5

    cluster.converge(check=check)
    assert new_spec_count(cluster) == (5, 5)
    assert seen[0] == 2 and 4 in seen


def test_rolling_update_start_first_keeps_old_task_until_new_runs() -> None:
    cluster = Cluster([updated_service(order="start-first", parallelism=1, replicas=2)], [make_node("n1")])
    cluster.converge()
    change_image(cluster)
    plan = cluster.orchestrate()
    assert [t.DesiredState for t in plan.create] == [R] and not plan.update
    assert new_spec_count(cluster) == (1, 3)
    cluster.place()
    cluster.run_workers()
    plan = cluster.orchestrate()  # new one runs: the old one goes, the next slot starts
    assert [t.DesiredState for t in plan.update] == [SD] and len(plan.create) == 1
    cluster.converge()
    assert new_spec_count(cluster) == (2, 2)


def test_rolling_update_delay_between_batches() -> None:
    service = updated_service(parallelism=1, delay=30 * S, replicas=2)
    nodes = [make_node("n1")]
    new_spec = service.Spec.TaskTemplate.model_copy(deep=True)
    new_spec.ContainerSpec.Image = "busybox:new"
    old_a = make_task("a", service, slot=1, node="n1", state=SD, desired=SD, at=T0, ended_at=T0 + 101)
    fresh_a = make_task("a2", service, slot=1, node="n1", at=T0 + 100, ended_at=T0 + 105, spec=new_spec)
    old_b = make_task("b", service, slot=2, node="n1", at=T0)
    service.Spec.TaskTemplate = new_spec
    service.UpdateStatus = ServiceUpdateStatus(State="updating", StartedAt=format_timestamp(T0 + 100))
    tasks = [old_a, fresh_a, old_b]
    assert once([service], tasks, nodes, now=T0 + 134.9).empty()  # a2 runs since T0+105: wait 30 s
    plan = once([service], tasks, nodes, now=T0 + 135)
    assert desired(plan) == {"b": SD} and [t.Slot for t in plan.create] == [2]
    # While a batch task is not running yet, nothing more starts.
    fresh_a.Status.State = TaskState.STARTING
    assert once([service], tasks, nodes, now=T0 + 500).empty()


def test_parallelism_zero_updates_all_at_once() -> None:
    cluster = Cluster([updated_service(parallelism=0)], [make_node("n1")])
    cluster.converge()
    change_image(cluster)
    plan = cluster.orchestrate()
    assert len(plan.create) == 5


def test_global_rolling_update_replaces_on_the_same_node() -> None:
    service = make_service("s", is_global=True, update=UpdateConfigSpec(Parallelism=1))
    cluster = Cluster([service], [make_node("n1"), make_node("n2")])
    cluster.converge()
    change_image(cluster)
    plan = cluster.orchestrate()
    [new] = plan.create
    [old] = plan.update
    assert new.NodeID == old.NodeID == "n1" and new.DesiredState == TaskState.READY
    cluster.converge()
    assert new_spec_count(cluster) == (2, 2)
    assert {t.NodeID for t in cluster.running("s")} == {"n1", "n2"}


# ------------------------------------------------------------------ removal and history


def test_removed_service_tasks_get_remove_then_are_deleted() -> None:
    service = make_service("s", replicas=4)
    tasks = [
        make_task("running", service, slot=1, node="n1"),
        make_task("unplaced", service, slot=2, state=TaskState.PENDING),
        make_task("on-down", service, slot=3, node="n2"),
        make_task("ended", service, slot=4, node="n1", state=SD, desired=SD),
    ]
    nodes = [make_node("n1"), make_node("n2", state="down")]
    plan = once([], tasks, nodes)
    assert desired(plan) == {"running": TaskState.REMOVE}
    assert sorted(plan.delete) == ["ended", "on-down", "unplaced"]
    cluster = Cluster([], nodes, tasks)
    cluster.converge()
    assert cluster.tasks == {}


def test_history_is_trimmed_per_slot() -> None:
    service = make_service("s", replicas=2)
    nodes = [make_node("n1")]
    tasks = [
        make_task(f"h{i}", service, slot=1, node="n1", state=F, desired=SD, at=T0 + i, ended_at=T0 + i + 0.5)
        for i in range(6)
    ]
    tasks.append(make_task("live1", service, slot=1, node="n1", at=T0 + 10))
    tasks += [make_task("old2", service, slot=2, node="n1", desired=SD, at=T0), make_task("live2", service, slot=2, node="n1", at=T0 + 1)]
    plan = once([service], tasks, nodes, history_limit=3)
    # Slot 1: live1 plus the two newest ended tasks remain. Slot 2: old2 is still stopping on a ready node.
    assert plan.delete == ["h0", "h1", "h2", "h3"] and not plan.create and not plan.update


def test_history_keeps_what_restart_rules_read() -> None:
    service = with_policy(Delay=60 * S, MaxAttempts=3)
    nodes = [make_node("n1")]
    tasks = [
        make_task(f"h{i}", service, slot=1, node="n1", state=F, desired=SD, at=T0 + i, ended_at=T0 + i + 0.5)
        for i in range(5)
    ]
    tasks.append(make_task("wait", service, slot=1, desired=TaskState.READY, state=TaskState.NEW, at=T0 + 5))
    plan = once([service], tasks, nodes, now=T0 + 6, history_limit=1)
    # h4 starts wait's delay; the newest MaxAttempts + 1 ended tasks (h1..h4) are what the policy counts
    # once a slot's last task has ended too.
    assert plan.delete == ["h0"]


# ------------------------------------------------------------------ properties


node_strategy = st.builds(
    dict,
    state=st.sampled_from(["ready", "ready", "ready", "down"]),
    availability=st.sampled_from(["active", "active", "active", "pause", "drain"]),
    rack=st.sampled_from(["a", "b", None]),
    disk=st.sampled_from(["ssd", "hdd", None]),
)
service_strategy = st.builds(
    dict,
    is_global=st.booleans(),
    replicas=st.integers(min_value=0, max_value=9),
    constraints=st.sampled_from([[], [], ["node.labels.disk==ssd"], ["node.labels.rack!=a"]]),
    spread=st.sampled_from([[], [], ["node.labels.rack"], ["node.labels.rack", "node.labels.disk"]]),
    max_replicas=st.sampled_from([None, None, 1, 2]),
)


def build(node_specs: list[dict], service_specs: list[dict]) -> Cluster:
    nodes = [
        make_node(
            f"n{i}",
            state=n["state"],
            availability=n["availability"],
            labels={k: n[k] for k in ("rack", "disk") if n[k] is not None},
        )
        for i, n in enumerate(node_specs)
    ]
    services = [
        make_service(
            f"s{i}",
            replicas=s["replicas"],
            is_global=s["is_global"],
            spec=make_spec(
                constraints=s["constraints"],
                spread=s["spread"],
                max_replicas=None if s["is_global"] else s["max_replicas"],
                restart=RestartPolicySpec(Delay=S),
            ),
        )
        for i, s in enumerate(service_specs)
    ]
    return Cluster(services, nodes, history_limit=3)


def eligible(cluster: Cluster, service: Service) -> list:
    constraints = parse_constraints((service.Spec.TaskTemplate.Placement or _NoPlacement).Constraints)
    return [
        n
        for n in cluster.nodes.values()
        if n.Status.State == "ready" and n.Spec.Availability == "active" and all(c.matches(n) for c in constraints)
    ]


class _NoPlacement:
    Constraints = None


def check_invariants(cluster: Cluster) -> None:
    for service in cluster.services.values():
        placement = service.Spec.TaskTemplate.Placement
        constraints = parse_constraints(placement.Constraints if placement else None)
        live = cluster.live(service.ID)
        if not service.Spec.Mode.is_global:
            running = [t for t in live if t.Status.State == R]
            assert len(running) <= service.Spec.Mode.Replicated.Replicas
            slots = Counter(t.Slot for t in live)
            assert all(n == 1 for n in slots.values()), "two live tasks in one slot"
        for task in live:
            if task.NodeID is not None and task.Status.State != TaskState.PENDING:
                node = cluster.nodes.get(task.NodeID)
                assert node is not None and all(c.matches(node) for c in constraints)


@settings(max_examples=150, deadline=None)
@given(
    node_specs=st.lists(node_strategy, min_size=1, max_size=8),
    service_specs=st.lists(service_strategy, min_size=1, max_size=4),
)
def test_random_cluster_converges(node_specs, service_specs) -> None:
    cluster = build(node_specs, service_specs)
    cluster.converge(check=check_invariants)
    for service in cluster.services.values():
        live = cluster.live(service.ID)
        fits = eligible(cluster, service)
        if service.Spec.Mode.is_global:
            assert Counter(t.NodeID for t in live) == Counter(n.ID for n in fits)
            continue
        replicas = service.Spec.Mode.Replicated.Replicas
        assert len(live) == replicas
        placement = service.Spec.TaskTemplate.Placement
        if placement is None and fits:
            per_node = Counter({n.ID: 0 for n in fits}) + Counter(t.NodeID for t in live)
            counts = [per_node[n.ID] for n in fits]
            assert max(counts) - min(counts) <= 1
            assert all(t.Status.State == R for t in live)


events = st.lists(
    st.one_of(
        st.tuples(st.just("fail"), st.integers(0, 50)),
        st.tuples(st.just("node"), st.integers(0, 7), st.sampled_from(["down", "ready", "drain", "active", "pause"])),
        st.tuples(st.just("scale"), st.integers(0, 3), st.integers(0, 9)),
        st.tuples(st.just("update"), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=80, deadline=None)
@given(
    node_specs=st.lists(node_strategy, min_size=2, max_size=6),
    service_specs=st.lists(service_strategy, min_size=1, max_size=3),
    changes=events,
)
def test_cluster_recovers_from_random_events(node_specs, service_specs, changes) -> None:
    cluster = build(node_specs, service_specs)
    cluster.converge(check=check_invariants)
    for event in changes:
        kind = event[0]
        if kind == "fail":
            running = sorted(t.ID for t in cluster.tasks.values() if t.Status.State == R)
            if running:
                cluster.set_state(running[event[1] % len(running)], F)
        elif kind == "node":
            node = cluster.nodes.get(f"n{event[1] % len(cluster.nodes)}")
            node = node.model_copy(deep=True)
            if event[2] in ("down", "ready"):
                node.Status.State = event[2]
            else:
                node.Spec.Availability = event[2]
            cluster.nodes[node.ID] = node
        else:
            service = cluster.services[f"s{event[1] % len(cluster.services)}"].model_copy(deep=True)
            if kind == "scale" and service.Spec.Mode.Replicated:
                service.Spec.Mode.Replicated.Replicas = event[2]
            elif kind == "update":
                service.Spec.TaskTemplate.ForceUpdate += 1
            service.UpdateStatus = None  # as the API does: a paused update resumes
            cluster.services[service.ID] = service
        cluster.converge(check=check_invariants)
        for service in cluster.services.values():
            live = cluster.live(service.ID)
            template = service.Spec.TaskTemplate
            if all(t.NodeID is not None for t in live):
                # A replacement no node accepts holds a rolling update up, as in Swarm; otherwise it
                # finishes, except for global tasks on nodes that are down or paused (updated when
                # the node takes new tasks again).
                reachable = [
                    t
                    for t in live
                    if not service.Spec.Mode.is_global
                    or cluster.nodes[t.NodeID].Status.State == "ready"
                    and cluster.nodes[t.NodeID].Spec.Availability == "active"
                ]
                assert all(t.Spec == template for t in reachable), "update did not finish"
            if service.Spec.Mode.is_global:
                fits = {n.ID for n in eligible(cluster, service)}
                assert fits <= {t.NodeID for t in live}
            else:
                assert len(live) == service.Spec.Mode.Replicated.Replicas
        for task in cluster.tasks.values():
            node = cluster.nodes.get(task.NodeID or "")
            if is_live(task) and task.NodeID and task.Status.State == R:
                assert node is not None and node.Spec.Availability != "drain" or node.Status.State == "down"


def test_global_update_waits_for_paused_and_down_nodes() -> None:
    service = make_service("s", is_global=True, update=UpdateConfigSpec(Parallelism=0))
    cluster = Cluster([service], [make_node("n1"), make_node("n2"), make_node("n3")])
    cluster.converge()
    cluster.nodes["n2"] = make_node("n2", availability="pause")
    cluster.nodes["n3"] = make_node("n3", state="down")
    change_image(cluster)
    cluster.converge()
    images = {t.NodeID: t.Spec.ContainerSpec.Image for t in cluster.live("s")}
    assert images == {"n1": "busybox:new", "n2": "busybox", "n3": "busybox"}
    cluster.nodes["n2"] = make_node("n2")
    cluster.nodes["n3"] = make_node("n3")
    cluster.converge()
    assert new_spec_count(cluster) == (3, 3)
