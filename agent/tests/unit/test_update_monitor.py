"""Update monitor, failure actions and rollback, on hand-made tasks and through the in-memory loop."""

from cluster_sim import T0, Cluster, make_node, make_service, make_task
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_agent.api.models import ServiceUpdateStatus, TaskState, UpdateConfigSpec
from swarm_agent.manager.timestamps import format_timestamp
from swarm_agent.manager.updater import next_status, plan_update

S = 1_000_000_000
R, F, SD = TaskState.RUNNING, TaskState.FAILED, TaskState.SHUTDOWN


def service_with(replicas: int = 4, **update) -> Cluster:
    service = make_service("s", replicas=replicas, update=UpdateConfigSpec(**update))
    service.Spec.RollbackConfig = UpdateConfigSpec(Parallelism=0, Monitor=2 * S)
    cluster = Cluster([service], [make_node("n1"), make_node("n2")])
    cluster.converge()
    return cluster


def update_image(cluster: Cluster, image: str) -> None:
    """What the API does on ``docker service update --image``."""
    service = cluster.services["s"].model_copy(deep=True)
    service.PreviousSpec = service.Spec.model_copy(deep=True)
    service.Spec.TaskTemplate.ContainerSpec.Image = image
    service.UpdateStatus = None
    cluster.services["s"] = service


def failing(image: str, after: float = 0.0):
    """A check that makes every running task of ``image`` fail once it ran ``after`` seconds."""

    def check(cluster: Cluster) -> None:
        for task in list(cluster.tasks.values()):
            started = cluster.running_since.get(task.ID)
            if task.Spec.ContainerSpec.Image == image and task.Status.State == R and cluster.now - started >= after:
                cluster.set_state(task.ID, F)
                failed = cluster.tasks[task.ID]
                failed.Status.Err = "task: non-zero exit (1)"

    return check


def run_until(cluster: Cluster, state: str, check=None, max_rounds: int = 300) -> None:
    """Tick until the update status reads ``state`` (tasks of a failing spec never settle)."""
    for _ in range(max_rounds):
        cluster.tick()
        if check is not None:
            check(cluster)
        if status(cluster) is not None and status(cluster).State == state:
            return
    raise AssertionError(f"update status never became {state}: {status(cluster)}")


def status(cluster: Cluster) -> ServiceUpdateStatus:
    return cluster.services["s"].UpdateStatus


def images(cluster: Cluster) -> list[str]:
    return sorted(t.Spec.ContainerSpec.Image for t in cluster.live("s"))


def test_update_completes_after_the_monitor_of_its_last_task() -> None:
    cluster = service_with(Parallelism=2, Monitor=10 * S)
    update_image(cluster, "busybox:new")
    cluster.tick()
    assert status(cluster).State == "updating" and status(cluster).Message == "update in progress"
    started = status(cluster).StartedAt
    while images(cluster) != ["busybox:new"] * 4 or any(t.Status.State != R for t in cluster.live("s")):
        cluster.tick()
    done_at = max(cluster.running_since[t.ID] for t in cluster.live("s"))
    while cluster.now < done_at + 10:
        assert status(cluster).State == "updating"
        cluster.tick()
    cluster.tick()
    assert status(cluster).State == "completed" and status(cluster).Message == "update completed"
    assert status(cluster).StartedAt == started and status(cluster).CompletedAt


def test_failure_within_monitor_pauses_and_names_the_task_and_its_error() -> None:
    cluster = service_with(Parallelism=1, Monitor=30 * S)
    update_image(cluster, "busybox:bad")
    run_until(cluster, "paused", failing("busybox:bad", after=2))
    failed = [t for t in cluster.tasks.values() if t.Status.State == F]
    assert status(cluster).Message == (
        f"update paused due to failure or early termination of task {failed[0].ID}: task: non-zero exit (1)"
    )
    # No batch starts once paused: the slots still on the old image keep it.
    old = images(cluster).count("busybox")
    assert old >= 2
    for _ in range(20):
        cluster.tick()
    assert images(cluster).count("busybox") == old


def test_failure_after_the_monitor_does_not_count() -> None:
    cluster = service_with(Parallelism=0, Monitor=2 * S)
    update_image(cluster, "busybox:late")
    run_until(cluster, "completed", failing("busybox:late", after=4))


def test_continue_keeps_going_through_failures() -> None:
    cluster = service_with(Parallelism=1, Monitor=30 * S, FailureAction="continue")
    update_image(cluster, "busybox:bad")
    run_until(cluster, "completed", failing("busybox:bad", after=1))
    assert images(cluster) == ["busybox:bad"] * 4


def test_rollback_goes_back_with_the_rollback_config_and_completes() -> None:
    cluster = service_with(Parallelism=1, Monitor=30 * S, FailureAction="rollback")
    update_image(cluster, "busybox:bad")
    run_until(cluster, "rollback_completed", failing("busybox:bad", after=1))
    service = cluster.services["s"]
    assert service.Spec.TaskTemplate.ContainerSpec.Image == "busybox" and service.PreviousSpec is None
    assert status(cluster).State == "rollback_completed" and status(cluster).Message == "rollback completed"
    assert images(cluster) == ["busybox"] * 4


def test_rollback_starts_with_a_message_naming_the_failed_task() -> None:
    cluster = service_with(Parallelism=1, Monitor=30 * S, FailureAction="rollback")
    update_image(cluster, "busybox:bad")
    check = failing("busybox:bad", after=1)
    while status(cluster) is None or status(cluster).State == "updating":
        cluster.tick()
        check(cluster)
    failed = next(t for t in cluster.tasks.values() if t.Status.State == F)
    assert status(cluster).State == "rollback_started"
    assert status(cluster).Message.startswith(f"update rolled back due to failure or early termination of task {failed.ID}")


def test_a_failing_rollback_pauses() -> None:
    cluster = service_with(Parallelism=1, Monitor=30 * S, FailureAction="rollback")
    cluster.services["s"].Spec.RollbackConfig = UpdateConfigSpec(Parallelism=1, Monitor=30 * S, FailureAction="rollback")
    update_image(cluster, "busybox:bad")
    run_until(cluster, "rollback_started", failing("busybox:bad", after=1))
    # The previous spec fails now as well: the rollback pauses rather than roll back again.
    run_until(cluster, "rollback_paused", failing("busybox", after=1))
    assert cluster.services["s"].Spec.TaskTemplate.ContainerSpec.Image == "busybox"
    assert status(cluster).Message.startswith("rollback paused due to failure or early termination of task")


def test_manual_rollback_uses_the_rollback_parallelism() -> None:
    cluster = service_with(Parallelism=1, Monitor=1 * S)
    update_image(cluster, "busybox:new")
    cluster.converge()
    service = cluster.services["s"].model_copy(deep=True)
    service.Spec, service.PreviousSpec = service.PreviousSpec, service.Spec
    service.UpdateStatus = ServiceUpdateStatus(
        State="rollback_started", StartedAt=format_timestamp(cluster.now), Message="manually requested rollback"
    )
    cluster.services["s"] = service
    plan = cluster.orchestrate()
    assert len(plan.create) == 4  # RollbackConfig.Parallelism is 0: all at once
    cluster.converge()
    assert status(cluster).State == "rollback_completed" and images(cluster) == ["busybox"] * 4


def test_paused_update_takes_no_batch_until_the_status_is_reset() -> None:
    cluster = service_with(Parallelism=1, Monitor=30 * S)
    update_image(cluster, "busybox:bad")
    run_until(cluster, "paused", failing("busybox:bad", after=1))
    cluster.converge()  # the failed slot restarts (and runs now), nothing else moves
    assert 1 <= images(cluster).count("busybox") <= 3
    # The next update (same spec, as `docker service update` without changes) resumes it.
    service = cluster.services["s"].model_copy(deep=True)
    service.UpdateStatus = None
    cluster.services["s"] = service
    run_until(cluster, "completed")
    assert images(cluster) == ["busybox:bad"] * 4


@settings(max_examples=200, deadline=None)
@given(
    slots=st.integers(1, 8),
    failures=st.integers(0, 8),
    ratio=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]),
    action=st.sampled_from(["pause", "continue", "rollback"]),
)
def test_failure_action_applies_exactly_when_the_ratio_is_exceeded(slots, failures, ratio, action) -> None:
    failures = min(failures, slots)
    service = make_service("s", replicas=slots)
    old = service.Spec.TaskTemplate.model_copy(deep=True)
    service.Spec.TaskTemplate.ContainerSpec.Image = "busybox:new"
    started = T0 + 10
    tasks = []
    for slot in range(1, slots + 1):
        tasks.append(make_task(f"o{slot}", service, slot=slot, node="n1", state=SD, desired=SD, spec=old))
        state = F if slot <= failures else R
        tasks.append(make_task(f"n{slot}", service, slot=slot, node="n1", state=state, at=started, ended_at=started + 1))
    config = UpdateConfigSpec(FailureAction=action, MaxFailureRatio=ratio, Monitor=5 * S)
    by_slot = {slot: [t for t in tasks if t.Slot == slot] for slot in range(1, slots + 1)}
    step = plan_update(by_slot, service.Spec.TaskTemplate, config, started + 2, started=started)
    assert step.covered == slots and len(step.failed) == failures
    current = ServiceUpdateStatus(State="updating", StartedAt=format_timestamp(started))
    change = next_status(current, step, config, format_timestamp(started + 2))
    exceeded = failures / slots > ratio and action != "continue"
    if exceeded:
        assert change is not None and change.status.State == ("paused" if action == "pause" else "rollback_started")
        assert change.rollback == (action == "rollback")
    elif failures < slots:
        assert change is None  # still within the monitor of the running ones
    else:
        assert change is not None and change.status.State == "completed"  # every update task ended
