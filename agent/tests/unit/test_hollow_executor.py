"""HollowExecutor: the simulated containers of hollow nodes move through the states a real engine's would."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from swarm_agent.api.models import TaskState
from swarm_agent.worker.hollow import FAILED_EXIT_CODE, STOPPED_EXIT_CODE, HollowExecutor

from cluster_sim import make_service, make_task


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


SERVICE = make_service("s1", replicas=3)


def task(n: int):
    return make_task(f"t{n}", SERVICE, slot=n, node="n1", state=TaskState.ASSIGNED)


def executor(clock: Clock, **kwargs) -> HollowExecutor:
    return HollowExecutor("n1", clock=clock, **kwargs)


def test_a_task_is_prepared_until_its_start_delay_passes_then_runs():
    clock = Clock()
    ex = executor(clock, start_delay=0.5)
    first = ex.start(task(1), "svc")
    assert first.state == TaskState.READY and first.message == "prepared"
    assert first.container_id and not first.container_running
    clock.now += 0.49
    assert ex.observe("t1").state == TaskState.READY
    clock.now += 0.02
    running = ex.observe_all()["t1"]
    assert running.state == TaskState.RUNNING and running.message == "started"
    assert running.container_running and running.container_id == first.container_id


def test_without_delay_start_returns_running():
    ex = executor(Clock(), start_delay=0)
    assert ex.start(task(1), "svc").state == TaskState.RUNNING


def test_starting_again_keeps_the_existing_container():
    clock = Clock()
    ex = executor(clock, start_delay=0)
    first = ex.start(task(1), "svc")
    again = ex.start(task(1), "svc")
    assert again.container_id == first.container_id
    assert len(ex.observe_all()) == 1


def test_stop_shuts_down_a_running_container_and_remove_forgets_it():
    clock = Clock()
    ex = executor(clock, start_delay=0)
    ex.start(task(1), "svc")
    stopped = ex.stop(task(1))
    assert stopped.state == TaskState.SHUTDOWN and stopped.exit_code == STOPPED_EXIT_CODE
    assert not stopped.container_running
    assert ex.observe("t1").state == TaskState.SHUTDOWN
    ex.remove("t1")
    assert ex.observe("t1") is None and ex.observe_all() == {}
    assert ex.stop(task(1)).state == TaskState.SHUTDOWN  # nothing left to stop
    ex.remove("t1")  # removing twice is harmless, as with the engine


def test_stop_before_the_start_delay_passes_never_runs_it():
    clock = Clock()
    ex = executor(clock, start_delay=5)
    ex.start(task(1), "svc")
    assert ex.stop(task(1)).exit_code is None
    clock.now += 10
    assert ex.observe("t1").state == TaskState.SHUTDOWN


def test_failed_tasks_keep_their_state_when_stopped():
    ex = executor(Clock(), start_delay=0, failure_rate=1.0)
    failed = ex.start(task(1), "svc")
    assert failed.state == TaskState.FAILED
    assert failed.err == f"task: non-zero exit ({FAILED_EXIT_CODE})" and failed.exit_code == FAILED_EXIT_CODE
    assert ex.stop(task(1)).state == TaskState.FAILED


def test_failure_rate_draws_from_the_given_rng():
    def failures(seed: int) -> list[str]:
        ex = executor(Clock(), start_delay=0, failure_rate=0.3, rng=random.Random(seed))
        return [f"t{n}" for n in range(400) if ex.start(task(n), "svc").state == TaskState.FAILED]

    first, again, other = failures(7), failures(7), failures(8)
    assert first == again  # same seed, same failures
    assert first != other
    assert 0.22 < len(first) / 400 < 0.38


def test_rates_and_delays_are_checked():
    with pytest.raises(ValueError):
        HollowExecutor("n1", failure_rate=1.5)
    with pytest.raises(ValueError):
        HollowExecutor("n1", start_delay=-1)


def test_describe_reports_a_linux_node_with_the_configured_resources_and_labels():
    ex = HollowExecutor("n1", nano_cpus=2_000_000_000, memory_bytes=1 << 30, engine_labels={"zone": "a"})
    desc = ex.describe("hollow-0001")
    assert desc.Hostname == "hollow-0001"
    assert desc.Platform.OS == "linux" and desc.Platform.Architecture
    assert desc.Resources.NanoCPUs == 2_000_000_000 and desc.Resources.MemoryBytes == 1 << 30
    assert desc.Engine.Labels == {"zone": "a"}
    assert {"Type": "Network", "Name": "overlay"} in desc.Engine.Plugins


def test_events_announce_changes_and_started_containers_then_end_on_close():
    ex = HollowExecutor("n1", start_delay=0.2)
    seen: list[tuple[str, float]] = []
    began = time.monotonic()

    def pump() -> None:
        for task_id in ex.events():
            seen.append((task_id, time.monotonic() - began))

    thread = threading.Thread(target=pump)
    thread.start()
    try:
        ex.start(task(1), "svc")
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [tid for tid, _ in seen] == ["t1", "t1"]  # created, then started
        assert seen[1][1] >= 0.2
        assert ex.observe("t1").state == TaskState.RUNNING
    finally:
        ex.close()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert list(ex.events()) == []  # after close, a new iterator ends at once


async def test_watch_wakes_on_changes_from_other_threads_and_when_a_start_is_due_without_a_thread():
    ex = HollowExecutor("n1", start_delay=0.2)
    wakes: list[float] = []
    changed = asyncio.Event()

    def wake() -> None:
        wakes.append(time.monotonic())
        changed.set()

    threads = threading.active_count()
    watching = asyncio.create_task(ex.watch(wake))
    await asyncio.sleep(0)
    assert threading.active_count() == threads
    began = time.monotonic()
    await asyncio.to_thread(ex.start, task(1), "svc")  # as the session starts tasks
    async with asyncio.timeout(5):
        while len(wakes) < 2:  # created, then started
            changed.clear()
            await changed.wait()
    assert wakes[1] - began >= 0.2 and ex.observe("t1").state == TaskState.RUNNING
    ex.close()
    async with asyncio.timeout(5):
        await watching  # ends with the executor
