"""Job services through the in-memory loop: run to completion, MaxConcurrent, restarts, iterations."""

from cluster_sim import Cluster, make_node, make_service
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_agent.api.models import (
    GlobalMode,
    ObjectVersion,
    ReplicatedJobMode,
    RestartPolicySpec,
    ServiceJobStatus,
    ServiceMode,
    TaskState,
)

R, C, F = TaskState.RUNNING, TaskState.COMPLETE, TaskState.FAILED


def job_cluster(*, total: int = 5, concurrent: int = 2, nodes: int = 2, is_global: bool = False,
                restart: RestartPolicySpec | None = None) -> Cluster:
    service = make_service("j")
    mode = ServiceMode(GlobalJob=GlobalMode()) if is_global else ServiceMode(
        ReplicatedJob=ReplicatedJobMode(MaxConcurrent=concurrent, TotalCompletions=total))
    service.Spec.Mode = mode
    service.Spec.TaskTemplate.RestartPolicy = restart or RestartPolicySpec(Condition="on-failure", Delay=0)
    service.JobStatus = ServiceJobStatus()
    return Cluster([service], [make_node(f"n{i}") for i in range(1, nodes + 1)])


def finish(cluster: Cluster, state: TaskState = C, limit: int | None = None) -> int:
    """Running job tasks end in ``state`` (at most ``limit`` of them); how many did."""
    done = 0
    for task in sorted(cluster.tasks.values(), key=lambda t: t.ID):
        if task.Status.State == R and (limit is None or done < limit):
            cluster.set_state(task.ID, state)
            done += 1
    return done


def states(cluster: Cluster) -> list[TaskState]:
    return sorted((t.Status.State for t in cluster.tasks.values()), key=lambda s: s.value)


def test_replicated_job_runs_to_total_completions_at_most_max_concurrent_at_once() -> None:
    cluster = job_cluster(total=5, concurrent=2)
    for _ in range(10):
        cluster.converge()
        running = [t for t in cluster.tasks.values() if t.Status.State == R]
        assert len(running) <= 2
        assert all(t.DesiredState == C for t in running)
        finish(cluster, limit=1)
    cluster.converge()
    assert states(cluster) == [C] * 5
    assert sorted(t.Slot for t in cluster.tasks.values()) == [1, 2, 3, 4, 5]
    assert all(t.JobIteration.Index == 0 for t in cluster.tasks.values())


def test_failed_job_task_restarts_on_failure_but_not_after_success() -> None:
    cluster = job_cluster(total=1, concurrent=1, restart=RestartPolicySpec(Condition="on-failure", Delay=0,
                                                                           MaxAttempts=2))
    cluster.converge()
    finish(cluster, F)
    cluster.converge()
    finish(cluster, F)
    cluster.converge()
    finish(cluster, F)
    cluster.converge()
    assert states(cluster) == [F] * 3  # the first run and two restarts, then given up
    cluster = job_cluster(total=1, concurrent=1)
    cluster.converge()
    finish(cluster, F)
    cluster.converge()
    finish(cluster, C)
    cluster.converge()
    assert states(cluster) == [C, F]


def test_condition_none_never_restarts_a_job_task() -> None:
    cluster = job_cluster(total=2, concurrent=2, restart=RestartPolicySpec(Condition="none"))
    cluster.converge()
    finish(cluster, F)
    cluster.converge()
    assert states(cluster) == [F, F]


def test_global_job_runs_once_per_node_and_on_nodes_that_join() -> None:
    cluster = job_cluster(is_global=True, nodes=3)
    cluster.converge()
    assert sorted(t.NodeID for t in cluster.tasks.values()) == ["n1", "n2", "n3"]
    finish(cluster)
    cluster.converge()
    assert states(cluster) == [C] * 3
    cluster.nodes["n4"] = make_node("n4")
    cluster.converge()
    finish(cluster)
    cluster.converge()
    assert states(cluster) == [C] * 4 and {t.NodeID for t in cluster.tasks.values()} == {"n1", "n2", "n3", "n4"}


def test_a_new_iteration_stops_the_old_one_and_runs_again() -> None:
    cluster = job_cluster(total=3, concurrent=3)
    cluster.converge()
    finish(cluster, limit=2)
    cluster.converge()
    service = cluster.services["j"].model_copy(deep=True)
    service.JobStatus.JobIteration = ObjectVersion(Index=1)
    cluster.services["j"] = service
    cluster.converge()
    old = [t for t in cluster.tasks.values() if t.JobIteration.Index == 0]
    new = [t for t in cluster.tasks.values() if t.JobIteration.Index == 1]
    assert all(t.DesiredState == TaskState.SHUTDOWN for t in old)
    assert [t.Status.State for t in old].count(TaskState.SHUTDOWN) == 1  # the one still running was stopped
    assert len(new) == 3 and all(t.Status.State == R for t in new)


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 8), concurrent=st.integers(1, 4), fails=st.lists(st.booleans(), max_size=30))
def test_replicated_job_never_exceeds_concurrency_and_completes(total, concurrent, fails) -> None:
    cluster = job_cluster(total=total, concurrent=concurrent)
    outcomes = iter(fails)
    for _ in range(3 * total + len(fails) + 2):
        cluster.converge()
        assert sum(1 for t in cluster.tasks.values() if t.Status.State == R) <= concurrent
        finish(cluster, F if next(outcomes, False) else C, limit=1)
    cluster.converge()
    done = [t for t in cluster.tasks.values() if t.Status.State == C]
    assert sorted(t.Slot for t in done) == list(range(1, total + 1))
