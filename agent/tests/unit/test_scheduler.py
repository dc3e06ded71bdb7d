import time
from collections import Counter

from cluster_sim import Ids, make_node, make_service, make_spec, make_task
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_agent.api.models import Service, Task, TaskState
from swarm_agent.manager.constraints import parse_constraints
from swarm_agent.manager.scheduler import Decision, explain, schedule


def pending_tasks(service: Service, count: int, ids: Ids | None = None) -> list[Task]:
    ids = ids or Ids("p")
    return [make_task(ids(), service, slot=i + 1, state=TaskState.NEW) for i in range(count)]


def run(service: Service, nodes, count: int, existing: list[Task] = (), services=None) -> list[Decision]:
    pending = pending_tasks(service, count)
    services = services or {service.ID: service}
    return schedule(pending, nodes, list(existing) + pending, services)


def test_spreads_evenly_by_service_then_total_then_node_id() -> None:
    nodes = [make_node(f"n{i}") for i in range(3)]
    other = make_service("other")
    busy = [make_task(f"o{i}", other, slot=i, node="n0") for i in range(3)]
    service = make_service("s")
    decisions = run(service, nodes, 4, busy, {"s": service, "other": other})
    # n1, n2 carry nothing; n0 carries other tasks, so it comes last; then the service count wins.
    assert [d.node_id for d in decisions] == ["n1", "n2", "n0", "n1"]
    assert all(d.reason == "" for d in decisions)


def test_filters_and_swarm_reason_sorted_by_rejections() -> None:
    nodes = [
        make_node("down", state="down"),
        make_node("drained", availability="drain"),
        make_node("paused", availability="pause"),
        make_node("arm", arch="aarch64", labels={"disk": "ssd"}),
        make_node("hdd1", labels={"disk": "hdd"}),
        make_node("hdd2", labels={"disk": "hdd"}),
    ]
    service = make_service("s", spec=make_spec(constraints=["node.labels.disk==ssd"], platforms=[("amd64", "linux")]))
    [decision] = run(service, nodes, 1)
    assert decision == Decision(
        decision.task_id,
        None,
        "no suitable node (3 nodes not available for new tasks; "
        "scheduling constraints not satisfied on 2 nodes; unsupported platform on 1 node)",
    )


def test_explain_wording() -> None:
    assert explain([0, 0, 0, 1, 0, 0]) == "no suitable node (insufficient resources on 1 node)"
    assert explain([0, 0, 0, 0, 2, 0]) == "no suitable node (host-mode port already in use on 2 nodes)"
    assert explain([0, 0, 0, 0, 0, 4]) == "no suitable node (max replicas per node limit exceed)"
    assert explain([1, 0, 1, 0, 0, 0]) == (
        "no suitable node (1 node not available for new tasks; scheduling constraints not satisfied on 1 node)"
    )
    assert explain([0] * 6) == "no suitable node"


def test_platform_aliases_and_case() -> None:
    nodes = [make_node("x", arch="x86_64", os="Linux"), make_node("a", arch="aarch64")]
    amd = make_service("amd", spec=make_spec(platforms=[("amd64", "linux")]))
    arm = make_service("arm", spec=make_spec(platforms=[("arm64", "")]))
    assert [d.node_id for d in run(amd, nodes, 2)] == ["x", "x"]
    assert [d.node_id for d in run(arm, nodes, 1)] == ["a"]
    windows = make_service("win", spec=make_spec(platforms=[("", "windows")]))
    assert run(windows, nodes, 1)[0].reason == "no suitable node (unsupported platform on 2 nodes)"


def test_resources_count_existing_tasks_and_the_batch() -> None:
    nodes = [make_node("big", cpus=4, memory=8 << 30), make_node("small", cpus=1, memory=8 << 30)]
    service = make_service("s", spec=make_spec(cpus=1.5))
    already = [make_task("e1", service, slot=10, node="big")]
    ended = make_task("e2", service, slot=11, node="big", state=TaskState.FAILED)  # holds nothing
    decisions = run(service, nodes, 2, [already[0], ended])
    assert decisions[0].node_id == "big"  # 4 - 1.5 = 2.5 left, enough for one more
    assert decisions[1] == Decision(decisions[1].task_id, None, "no suitable node (insufficient resources on 2 nodes)")
    memory = make_service("m", spec=make_spec(memory=5 << 30))
    assert [d.node_id for d in run(memory, nodes, 3)] == ["big", "small", None]


def test_node_without_reported_resources_rejects_reservations() -> None:
    service = make_service("s", spec=make_spec(cpus=0.5))
    [decision] = run(service, [make_node("n")], 1)
    assert decision.reason == "no suitable node (insufficient resources on 1 node)"


def test_host_ports_conflict_with_active_tasks_and_within_batch() -> None:
    nodes = [make_node("n1"), make_node("n2"), make_node("n3")]
    web = make_service("web", host_ports=[8080])
    other = make_service("other", host_ports=[8080])
    existing = [
        make_task("o1", other, slot=1, node="n1"),
        make_task("o2", other, slot=2, node="n2", desired=TaskState.SHUTDOWN),  # being stopped: port free
    ]
    decisions = run(web, nodes, 3, existing, {"web": web, "other": other})
    assert sorted(d.node_id for d in decisions[:2]) == ["n2", "n3"]
    assert decisions[2].reason == "no suitable node (host-mode port already in use on 3 nodes)"


def test_max_replicas_per_node() -> None:
    nodes = [make_node("n1"), make_node("n2")]
    service = make_service("s", spec=make_spec(max_replicas=2))
    decisions = run(service, nodes, 5)
    assert Counter(d.node_id for d in decisions) == {"n1": 2, "n2": 2, None: 1}
    assert decisions[-1].reason == "no suitable node (max replicas per node limit exceed)"


def test_spread_preference_groups_and_missing_label_group() -> None:
    nodes = [
        make_node("a1", labels={"rack": "a"}),
        make_node("a2", labels={"rack": "a"}),
        make_node("a3", labels={"rack": "a"}),
        make_node("b1", labels={"rack": "b"}),
        make_node("x1"),
    ]
    service = make_service("s", spec=make_spec(spread=["node.labels.rack"]))
    decisions = run(service, nodes, 6)
    by_rack = Counter({"a1": "a", "a2": "a", "a3": "a", "b1": "b", "x1": None}[d.node_id] for d in decisions)
    assert by_rack == {"a": 2, "b": 2, None: 2}


def test_nested_spread() -> None:
    nodes = [
        make_node(f"{dc}{rack}{i}", labels={"dc": dc, "rack": f"{dc}{rack}"})
        for dc in "xy"
        for rack in "12"
        for i in range(2 if dc == "x" else 1)
    ]
    service = make_service("s", spec=make_spec(spread=["node.labels.dc", "node.labels.rack"]))
    decisions = run(service, nodes, 8)
    per_node = Counter(d.node_id for d in decisions)
    assert sum(n for node, n in per_node.items() if node.startswith("x")) == 4
    assert per_node["y10"] == per_node["y20"] == 2
    assert all(per_node[f"x{r}{i}"] == 1 for r in "12" for i in range(2))


def test_pinned_task_checks_only_its_node() -> None:
    nodes = [make_node("n1"), make_node("n2", availability="pause"), make_node("n3", cpus=1)]
    service = make_service("g", is_global=True, spec=make_spec(cpus=0.6))
    tasks = [
        make_task("t1", service, node="n1", state=TaskState.PENDING),
        make_task("t2", service, node="n2", state=TaskState.PENDING),
        make_task("t3", service, node="n3", state=TaskState.PENDING),
        make_task("t4", service, node="gone", state=TaskState.PENDING),
    ]
    decisions = schedule(tasks, nodes, tasks, {"g": service})
    assert [(d.node_id, d.reason) for d in decisions] == [
        (None, "no suitable node (insufficient resources on 1 node)"),
        (None, "no suitable node (1 node not available for new tasks)"),
        ("n3", ""),
        (None, "no suitable node (1 node not available for new tasks)"),
    ]


def test_pinned_placement_counts_for_the_rest_of_the_batch() -> None:
    nodes = [make_node("n1"), make_node("n2")]
    global_service = make_service("g", is_global=True, host_ports=[80])
    web = make_service("web", host_ports=[80])
    pinned = make_task("g1", global_service, node="n1", state=TaskState.PENDING)
    loose = make_task("w1", web, slot=1, state=TaskState.NEW)
    decisions = schedule([pinned, loose], nodes, [pinned, loose], {"g": global_service, "web": web})
    assert [d.node_id for d in decisions] == ["n1", "n2"]


def test_large_batch_is_fast() -> None:
    nodes = [make_node(f"n{i:04d}", labels={"rack": str(i % 20)}, cpus=16, memory=64 << 30) for i in range(2500)]
    ids = Ids("e")
    services, existing, pending = {}, [], []
    for k in range(10):
        spec = make_spec(
            cpus=0.25 if k % 2 else None,
            spread=["node.labels.rack"] if k % 3 == 0 else None,
            constraints=["node.labels.rack!=3"] if k % 4 == 0 else None,
            max_replicas=4 if k % 5 == 0 else None,
        )
        service = make_service(f"s{k}", replicas=600, spec=spec, host_ports=[9000] if k == 7 else ())
        services[service.ID] = service
        existing += [make_task(ids(), service, slot=i + 1, node=f"n{(i * 7 + k) % 2500:04d}") for i in range(500)]
        pending += [make_task(ids(), service, slot=501 + i, state=TaskState.NEW) for i in range(100)]
    started = time.perf_counter()
    decisions = schedule(pending, nodes, existing + pending, services)
    elapsed = time.perf_counter() - started
    assert len(decisions) == 1000 and all(d.node_id for d in decisions)
    assert elapsed < 1.5, f"2,500 nodes x 1,000 tasks took {elapsed:.2f}s"


# ------------------------------------------------------------------ properties

node_strategy = st.builds(
    dict,
    state=st.sampled_from(["ready", "ready", "ready", "down", "unknown"]),
    availability=st.sampled_from(["active", "active", "pause", "drain"]),
    rack=st.sampled_from(["a", "b", "c", None]),
    disk=st.sampled_from(["ssd", "hdd", None]),
    cpus=st.sampled_from([None, 1, 2, 4]),
)


def build_nodes(specs: list[dict]) -> list:
    nodes = []
    for i, spec in enumerate(specs):
        labels = {k: v for k, v in (("rack", spec["rack"]), ("disk", spec["disk"])) if v is not None}
        nodes.append(
            make_node(
                f"n{i:02d}", state=spec["state"], availability=spec["availability"], labels=labels, cpus=spec["cpus"]
            )
        )
    return nodes


@settings(max_examples=60, deadline=None)
@given(
    node_specs=st.lists(node_strategy, min_size=1, max_size=10),
    constraints=st.sampled_from([[], ["node.labels.disk==ssd"], ["node.labels.rack!=a", "node.labels.disk!=hdd"]]),
    max_replicas=st.sampled_from([None, 1, 2]),
    cpus=st.sampled_from([None, 0.5, 1.5]),
    count=st.integers(min_value=1, max_value=25),
)
def test_every_placement_passes_every_filter(node_specs, constraints, max_replicas, cpus, count) -> None:
    nodes = build_nodes(node_specs)
    service = make_service("s", spec=make_spec(constraints=constraints, max_replicas=max_replicas, cpus=cpus))
    decisions = run(service, nodes, count)
    by_id = {n.ID: n for n in nodes}
    parsed = parse_constraints(constraints)
    placed = Counter(d.node_id for d in decisions if d.node_id)
    for node_id, n in placed.items():
        node = by_id[node_id]
        assert node.Status.State == "ready" and node.Spec.Availability == "active"
        assert all(c.matches(node) for c in parsed)
        if max_replicas:
            assert n <= max_replicas
        if cpus:
            assert n * cpus <= (node.Description.Resources.NanoCPUs or 0) / 1e9 + 1e-9
    unplaced = [d for d in decisions if d.node_id is None]
    assert all(d.reason.startswith("no suitable node") for d in unplaced)
    if unplaced:
        # Once one task of a kind finds no node, no later one does either.
        first = decisions.index(unplaced[0])
        assert all(d.node_id is None for d in decisions[first:])
    if not constraints and not max_replicas and not cpus:
        eligible = [n for n in nodes if n.Status.State == "ready" and n.Spec.Availability == "active"]
        if eligible:
            counts = [placed.get(n.ID, 0) for n in eligible]
            assert max(counts) - min(counts) <= 1
            assert not unplaced
