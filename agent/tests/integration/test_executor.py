"""The executor against a real Docker engine in a test host."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from swarm_agent.api.models import Task, TaskState
from swarm_agent.worker.executor import UNHEALTHY_ERR, Executor, Observed

pytestmark = pytest.mark.integration

SECOND = 1_000_000_000
NODE = "node1"


def make_task(task_id: str, container: dict[str, Any], name: str = "", **spec: Any) -> Task:
    return Task.model_validate(
        {
            "ID": task_id,
            "Name": name or f"web.{task_id}",
            "ServiceID": "svc1",
            "NodeID": NODE,
            "Spec": {"ContainerSpec": {"Image": "local/busybox:1", **container}, **spec},
        }
    )


def wait_for(what: Callable[[], Observed | None], until: Callable[[Observed], bool], timeout: float = 20) -> Observed:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = what()
        if last is not None and until(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"condition not reached in {timeout}s; last observed {last}")


@pytest.fixture
def host(lab: Any, busybox: tuple[str, Any]) -> Any:
    h = lab.add_host("h1", engine_labels={"zone": "east", "disk": "ssd"})
    h.load_image(busybox[1])
    return h


@pytest.fixture
def engine(host: Any) -> Iterator[docker.APIClient]:
    api = docker.APIClient(base_url=host.docker_url, version="1.41")
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def executor(host: Any, engine: docker.APIClient) -> Iterator[Executor]:
    ex = Executor(host.docker_url, node_id=NODE)
    try:
        yield ex
    finally:
        ex.close()
        # The engine goes with the lab; removing our containers first keeps a failing
        # test from leaving running processes behind if the engine is slow to stop.
        for summary in engine.containers(all=True):
            engine.remove_container(summary["Id"], force=True)


def cgroup_value(engine: docker.APIClient, cid: str, v1: str, v2: str) -> str:
    # Read from inside the container: cgroup v1 (hybrid) here, v2 on newer hosts.
    out = engine.exec_start(engine.exec_create(cid, ["sh", "-c", f"cat {v1} 2>/dev/null || cat {v2}"])["Id"])
    return out.decode().strip()


def test_start_runs_the_task_as_swarm_would(executor: Executor, engine: docker.APIClient) -> None:
    task = make_task(
        "t1",
        {
            "Command": ["sh", "-c"],
            "Args": ["exec sleep 300"],
            "Env": ["GREETING=hello world"],
            "Dir": "/srv",
            "User": "1000",
            "Hostname": "webhost",
            "Labels": {"app": "shop"},
            "Hosts": ["10.9.8.7 db db.internal"],
        },
        name="web.1",
        Resources={"Limits": {"MemoryBytes": 64 << 20, "Pids": 50, "NanoCPUs": 500_000_000}},
    )
    observed = executor.start(task, "web")
    assert observed.state == TaskState.RUNNING, observed
    assert observed.message == "started" and observed.pid

    info = engine.inspect_container(observed.container_id)
    assert info["Name"] == "/web.1.t1"
    assert info["Config"]["Labels"] == {
        "app": "shop",
        "com.docker.swarm.task": "",
        "com.docker.swarm.task.id": "t1",
        "com.docker.swarm.task.name": "web.1.t1",
        "com.docker.swarm.node.id": NODE,
        "com.docker.swarm.service.id": "svc1",
        "com.docker.swarm.service.name": "web",
    }
    assert info["Config"]["Entrypoint"] == ["sh", "-c"]
    assert info["Config"]["Cmd"] == ["exec sleep 300"]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert info["State"]["Pid"] == observed.pid

    # What the process really got, seen from inside the container.
    probe = engine.exec_create(
        observed.container_id, [
            "sh",
            "-c",
            # Shell builtins and cat only: the test image has little else.
            'echo "$GREETING"; pwd; cat /proc/sys/kernel/hostname;'
            ' while read -r key rest; do [ "$key" = Uid: ] && echo "$key $rest"; done </proc/self/status;'
            " cat /etc/hosts",
        ],
    )
    out = engine.exec_start(probe["Id"]).decode()
    lines = out.splitlines()
    assert lines[0] == "hello world"
    assert lines[1] == "/srv"
    assert lines[2] == "webhost"
    assert lines[3].split()[1] == "1000"
    assert any(line.split()[:2] == ["10.9.8.7", "db"] for line in lines[4:]), out
    assert any(line.split()[:2] == ["10.9.8.7", "db.internal"] for line in lines[4:]), out
    mem = cgroup_value(
        engine, observed.container_id, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"
    )
    assert int(mem) == 64 << 20
    pids = cgroup_value(engine, observed.container_id, "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")
    assert int(pids) == 50
    assert info["HostConfig"]["NanoCpus"] == 500_000_000


def test_exit_codes_become_complete_and_failed(executor: Executor) -> None:
    ok = make_task("ok", {"Command": ["sh", "-c", "exit 0"]})
    bad = make_task("bad", {"Command": ["sh", "-c", "exit 3"]})
    executor.start(ok, "web")
    executor.start(bad, "web")
    done = wait_for(lambda: executor.observe("ok"), lambda o: o.state.terminal)
    assert (done.state, done.message, done.err, done.exit_code) == (TaskState.COMPLETE, "finished", None, 0)
    failed = wait_for(lambda: executor.observe("bad"), lambda o: o.state.terminal)
    assert (failed.state, failed.err, failed.exit_code) == (TaskState.FAILED, "task: non-zero exit (3)", 3)
    assert failed.status().Err == "task: non-zero exit (3)"

    # An ended container is reported, never restarted: that is the orchestrator's call.
    again = executor.start(bad, "web")
    assert (again.state, again.container_id) == (TaskState.FAILED, failed.container_id)


def test_stop_uses_the_spec_signal_and_grace_period(executor: Executor) -> None:
    # USR1 is the only signal this one answers; it exits 42 on it.
    polite = make_task(
        "polite",
        {"Command": ["sh", "-c", "trap 'exit 42' USR1; sleep 1000 & wait $!"], "StopSignal": "SIGUSR1"},
    )
    # This one ignores TERM and must be killed once its 2 s are up.
    stubborn = make_task(
        "stubborn",
        {
            "Command": ["sh", "-c", "trap '' TERM; while :; do sleep 1000 & wait $!; done"],
            "StopGracePeriod": 2 * SECOND,
        },
    )
    for task in (polite, stubborn):
        assert executor.start(task, "web").state == TaskState.RUNNING
    time.sleep(0.5)  # let the shells install their traps

    began = time.monotonic()
    stopped = executor.stop(polite)
    assert time.monotonic() - began < 5
    assert (stopped.state, stopped.message, stopped.exit_code) == (TaskState.SHUTDOWN, "shutdown", 42)

    began = time.monotonic()
    stopped = executor.stop(stubborn)
    took = time.monotonic() - began
    assert 2 <= took < 9, took
    assert (stopped.state, stopped.exit_code) == (TaskState.SHUTDOWN, 137)

    # Stopped containers stay as history, still read as shut down.
    history = executor.observe_all()
    assert {history["polite"].state, history["stubborn"].state} == {TaskState.SHUTDOWN}
    # Stopping again is harmless.
    assert executor.stop(polite).state == TaskState.SHUTDOWN


def test_stop_keeps_the_state_a_task_ended_in(executor: Executor) -> None:
    task = make_task("quick", {"Command": ["sh", "-c", "exit 5"]})
    executor.start(task, "web")
    wait_for(lambda: executor.observe("quick"), lambda o: o.state.terminal)
    assert executor.stop(task).state == TaskState.FAILED
    assert executor.stop(make_task("never", {})).state == TaskState.SHUTDOWN


def test_rejections_and_start_failures(executor: Executor, engine: docker.APIClient) -> None:
    # A registry on this host's loopback that is not there: the pull fails at once, and nothing leaves the host.
    image = "127.0.0.1:1/missing:1"
    missing = executor.start(make_task("noimg", {"Image": image}), "web")
    assert (missing.state, missing.err, missing.container_id) == (TaskState.REJECTED, f"No such image: {image}", "")

    bad_mount = make_task("nomount", {"Mounts": [{"Type": "bind", "Source": "/no/such/dir", "Target": "/data"}]})
    refused = executor.start(bad_mount, "web")
    assert refused.state == TaskState.REJECTED
    assert refused.err and "/no/such/dir" in refused.err

    no_exec = executor.start(make_task("noexec", {"Command": ["/no/such/binary"]}), "web")
    assert no_exec.state == TaskState.FAILED
    assert no_exec.err and "/no/such/binary" in no_exec.err
    # The failed container stays; a second start reports it instead of retrying.
    again = executor.start(make_task("noexec", {"Command": ["/no/such/binary"]}), "web")
    assert (again.state, again.container_id) == (TaskState.FAILED, no_exec.container_id)
    assert engine.inspect_container(no_exec.container_id)["State"]["Status"] == "created"


def test_a_restarted_agent_adopts_running_containers(host: Any, executor: Executor, engine: docker.APIClient) -> None:
    task = make_task("adopt", {"Command": ["sleep", "300"]})
    first = executor.start(task, "web")
    started_at = engine.inspect_container(first.container_id)["State"]["StartedAt"]

    reborn = Executor(host.docker_url, node_id=NODE)
    try:
        seen = reborn.observe_all()
        assert set(seen) == {"adopt"}
        assert (seen["adopt"].state, seen["adopt"].container_id) == (TaskState.RUNNING, first.container_id)
        again = reborn.start(task, "web")
        assert (again.state, again.container_id) == (TaskState.RUNNING, first.container_id)
        assert engine.inspect_container(first.container_id)["State"]["StartedAt"] == started_at
    finally:
        reborn.close()

    other_node = Executor(host.docker_url, node_id="node2")
    try:
        assert other_node.observe_all() == {}
    finally:
        other_node.close()


def test_remove(executor: Executor, engine: docker.APIClient) -> None:
    task = make_task("gone", {"Command": ["sleep", "300"]})
    cid = executor.start(task, "web").container_id
    executor.remove("gone")
    assert not engine.containers(all=True, filters={"id": cid})
    assert executor.observe("gone") is None
    executor.remove("gone")  # absent: no error


def test_health_check_gates_running(executor: Executor) -> None:
    healthy = make_task(
        "healthy",
        {
            "Command": ["sleep", "300"],
            "HealthCheck": {"Test": ["CMD-SHELL", "test -e /proc/1"], "Interval": SECOND, "Retries": 1},
        },
    )
    sick = make_task(
        "sick",
        {
            "Command": ["sleep", "300"],
            "HealthCheck": {"Test": ["CMD-SHELL", "exit 1"], "Interval": SECOND, "Retries": 1},
        },
    )
    assert executor.start(healthy, "web").state == TaskState.STARTING
    assert executor.start(sick, "web").state == TaskState.STARTING
    ready = wait_for(lambda: executor.observe("healthy"), lambda o: o.state != TaskState.STARTING)
    assert ready.state == TaskState.RUNNING
    unhealthy = wait_for(lambda: executor.observe("sick"), lambda o: o.state != TaskState.STARTING)
    assert (unhealthy.state, unhealthy.err) == (TaskState.FAILED, UNHEALTHY_ERR)
    # Failed, yet its process still runs: the session must stop it.
    assert unhealthy.container_running
    assert executor.stop(sick).state == TaskState.SHUTDOWN
    assert not executor.observe("sick").container_running  # type: ignore[union-attr]


def test_events_report_a_dying_container_at_once(host: Any, executor: Executor) -> None:
    seen: queue.Queue[str] = queue.Queue()

    def consume() -> None:
        for task_id in executor.events(since=time.time()):
            seen.put(task_id)

    # Another node's task on the same engine must not show up in our stream.
    stranger = Executor(host.docker_url, node_id="node2")
    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        stranger.start(make_task("theirs", {"Command": ["sh", "-c", "exit 0"]}), "web")
        executor.start(make_task("brief", {"Command": ["sh", "-c", "sleep 1; exit 4"]}), "web")
        got: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                got.append(seen.get(timeout=0.5))
            except queue.Empty:
                continue
            if executor.observe("brief") and executor.observe("brief").state.terminal:  # type: ignore[union-attr]
                break
        assert "brief" in got
        assert "theirs" not in got
        # The event came after the death: what the session reads then is final.
        assert executor.observe("brief").err == "task: non-zero exit (4)"  # type: ignore[union-attr]
    finally:
        executor.close()
        reader.join(timeout=10)
        stranger.remove("theirs")
        stranger.close()
    assert not reader.is_alive(), "close() did not end the event stream"


def test_describe_reports_the_engine(host: Any, executor: Executor, engine: docker.APIClient) -> None:
    desc = executor.describe("h1")
    assert desc.Hostname == "h1"
    assert desc.Engine.Labels == {"zone": "east", "disk": "ssd"}
    version = engine.version()
    assert desc.Engine.EngineVersion == version["Version"]
    assert desc.Platform.OS == "linux"
    assert desc.Platform.Architecture == version["Arch"]
    info = engine.info()
    assert desc.Resources.NanoCPUs == info["NCPU"] * SECOND
    assert desc.Resources.MemoryBytes == info["MemTotal"]
    plugins = desc.Engine.Plugins
    for kind, name in (("Volume", "local"), ("Network", "bridge"), ("Network", "overlay")):
        assert {"Type": kind, "Name": name} in plugins
    assert plugins == sorted(plugins, key=lambda p: (p["Type"], p["Name"]))
