"""The task-to-container translation and the container-to-task-state translation, without an engine."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_agent.api.models import Task, TaskState
from swarm_agent.worker.container_config import (
    container_config,
    container_labels,
    container_name,
    extra_hosts,
    host_config,
    resolver_options,
    stop_grace_seconds,
)
from swarm_agent.worker.executor import UNHEALTHY_ERR, Observed, engine_plugins, observe_container

SECOND = 1_000_000_000


def make_task(container: dict[str, Any], **spec: Any) -> Task:
    return Task.model_validate(
        {
            "ID": "tid1",
            "Name": "web.3",
            "ServiceID": "sid1",
            "Labels": {"from.task": "t", "shared": "task"},
            "Spec": {"ContainerSpec": {"Image": "local/busybox:1", **container}, **spec},
        }
    )


def test_name_and_system_labels_win_over_user_labels() -> None:
    task = make_task({"Labels": {"app": "web", "shared": "spec", "com.docker.swarm.task.id": "forged"}})
    assert container_name(task) == "web.3.tid1"
    labels = container_labels(task, "web", "node9")
    assert labels == {
        "app": "web",
        "shared": "task",
        "from.task": "t",
        "com.docker.swarm.task": "",
        "com.docker.swarm.task.id": "tid1",
        "com.docker.swarm.task.name": "web.3.tid1",
        "com.docker.swarm.node.id": "node9",
        "com.docker.swarm.service.id": "sid1",
        "com.docker.swarm.service.name": "web",
    }


def test_process_settings() -> None:
    task = make_task(
        {
            "Command": ["/bin/sh", "-c"],
            "Args": ["echo hi"],
            "Env": ["A=1", "B=two words"],
            "Dir": "/srv",
            "User": "1000:1000",
            "Groups": ["audio", "video"],
            "Hostname": "box",
            "TTY": True,
            "OpenStdin": True,
            "ReadOnly": True,
            "StopSignal": "SIGUSR1",
            "StopGracePeriod": "3s",
            "Init": True,
        }
    )
    body = container_config(task, "web", "node9")
    assert body["Entrypoint"] == ["/bin/sh", "-c"]
    assert body["Cmd"] == ["echo hi"]
    assert body["Env"] == ["A=1", "B=two words"]
    assert body["WorkingDir"] == "/srv"
    assert body["User"] == "1000:1000"
    assert body["Hostname"] == "box"
    assert body["Tty"] is True and body["OpenStdin"] is True
    assert body["StopSignal"] == "SIGUSR1"
    assert body["StopTimeout"] == 3
    assert body["Image"] == "local/busybox:1"
    host = body["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["GroupAdd"] == ["audio", "video"]
    assert host["Init"] is True
    assert host["RestartPolicy"] == {"Name": "no"}


def test_args_alone_keep_the_image_entrypoint() -> None:
    body = container_config(make_task({"Args": ["-v"]}), "web", "n")
    assert body["Entrypoint"] is None
    assert body["Cmd"] == ["-v"]
    bare = container_config(make_task({}), "web", "n")
    assert bare["Entrypoint"] is None and bare["Cmd"] is None


@pytest.mark.parametrize(
    ("grace", "seconds"),
    [(None, 10), (0, 0), (2 * SECOND, 2), (SECOND // 2, 1), (2 * SECOND + 1, 3)],
)
def test_stop_grace_rounds_up_to_whole_seconds(grace: int | None, seconds: int) -> None:
    spec = {"StopGracePeriod": grace} if grace is not None else {}
    assert stop_grace_seconds(make_task(spec).Spec.ContainerSpec) == seconds


def test_hosts_become_extra_hosts_with_aliases() -> None:
    assert extra_hosts(["10.0.0.5 db db.local", "fe80::1  gw", "10.0.0.9"]) == [
        "db:10.0.0.5",
        "db.local:10.0.0.5",
        "gw:fe80::1",
    ]
    assert extra_hosts(None) is None


def test_mounts() -> None:
    task = make_task(
        {
            "Mounts": [
                {
                    "Type": "bind",
                    "Source": "/data",
                    "Target": "/d",
                    "ReadOnly": True,
                    "BindOptions": {"Propagation": "rslave", "NonRecursive": True},
                },
                {
                    "Type": "volume",
                    "Source": "vol1",
                    "Target": "/v",
                    "VolumeOptions": {
                        "NoCopy": True,
                        "Labels": {"k": "v"},
                        "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}},
                    },
                },
                {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1777}},
                {"Type": "volume", "Target": "/anon"},
            ]
        }
    )
    mounts = container_config(task, "web", "n")["HostConfig"]["Mounts"]
    assert mounts[0] == {
        "Target": "/d",
        "Source": "/data",
        "Type": "bind",
        "ReadOnly": True,
        "BindOptions": {"Propagation": "rslave", "NonRecursive": True},
    }
    assert mounts[1]["Source"] == "vol1" and mounts[1]["ReadOnly"] is False
    assert mounts[1]["VolumeOptions"] == {
        "NoCopy": True,
        "Labels": {"k": "v"},
        "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}},
    }
    assert mounts[2]["Type"] == "tmpfs"
    assert mounts[2]["TmpfsOptions"] == {"SizeBytes": 1 << 20, "Mode": 0o1777}
    assert mounts[3]["Type"] == "volume" and not mounts[3]["Source"]


def test_healthcheck_dns_kernel_and_capabilities() -> None:
    task = make_task(
        {
            "HealthCheck": {
                "Test": ["CMD-SHELL", "wget -q localhost"],
                "Interval": "2s",
                "Timeout": "1s",
                "Retries": 4,
                "StartPeriod": "5s",
            },
            "DNSConfig": {"Nameservers": ["10.0.0.2"], "Search": ["example.org"], "Options": ["ndots:2"]},
            "Sysctls": {"net.ipv4.ip_forward": "1"},
            "CapabilityAdd": ["CAP_NET_ADMIN"],
            "CapabilityDrop": ["CAP_CHOWN"],
            "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
            "Hosts": ["10.0.0.7 api"],
        }
    )
    body = container_config(task, "web", "n")
    assert body["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost"],
        "Interval": 2 * SECOND,
        "Timeout": SECOND,
        "Retries": 4,
        "StartPeriod": 5 * SECOND,
    }
    host = body["HostConfig"]
    assert host["Dns"] == ["10.0.0.2"]
    assert host["DnsSearch"] == ["example.org"]
    assert host["DnsOptions"] == ["ndots:2"]
    assert host["Sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert host["CapAdd"] == ["CAP_NET_ADMIN"]
    assert host["CapDrop"] == ["CAP_CHOWN"]
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert host["ExtraHosts"] == ["api:10.0.0.7"]


def test_resources_and_log_driver() -> None:
    task = make_task(
        {},
        Resources={
            "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 << 20, "Pids": 50},
            "Reservations": {"MemoryBytes": 32 << 20, "NanoCPUs": 100_000_000},
        },
        LogDriver={"Name": "json-file", "Options": {"max-size": "1m"}},
    )
    host = container_config(task, "web", "n")["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 << 20
    assert host["PidsLimit"] == 50
    assert host["MemoryReservation"] == 32 << 20
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}


def test_unset_options_are_left_to_the_engine() -> None:
    body = container_config(make_task({}), "web", "n")
    host = body["HostConfig"]
    for key in ("Mounts", "ExtraHosts", "Dns", "Sysctls", "CapAdd", "Ulimits", "NanoCpus", "Memory", "LogConfig"):
        assert key not in host, key
    assert body["Healthcheck"] is None
    assert body["StopSignal"] is None
    assert body["StopTimeout"] == 10


def test_selinux_privileges() -> None:
    label = make_task({"Privileges": {"SELinuxContext": {"User": "u", "Type": "t"}}})
    assert container_config(label, "web", "n")["HostConfig"]["SecurityOpt"] == ["label=user:u", "label=type:t"]
    off = make_task({"Privileges": {"SELinuxContext": {"Disable": True}}})
    assert container_config(off, "web", "n")["HostConfig"]["SecurityOpt"] == ["label=disable"]


# ------------------------------------------------------ container -> state


def inspect(status: str, **state: Any) -> dict[str, Any]:
    return {
        "Id": "c" * 64,
        "Config": {"Labels": {"com.docker.swarm.task.id": "tid1"}},
        "State": {
            "Status": status,
            "Pid": state.pop("Pid", 0),
            "ExitCode": state.pop("ExitCode", 0),
            "Error": state.pop("Error", ""),
            "OOMKilled": state.pop("OOMKilled", False),
            "StartedAt": state.pop("StartedAt", "2024-01-01T00:00:00Z"),
            **state,
        },
    }


@pytest.mark.parametrize(
    ("container", "state", "message", "err", "exit_code"),
    [
        (inspect("running", Pid=42), TaskState.RUNNING, "started", None, None),
        (inspect("running", Pid=42, Health={"Status": "starting"}), TaskState.STARTING, "starting", None, None),
        (inspect("running", Pid=42, Health={"Status": "healthy"}), TaskState.RUNNING, "started", None, None),
        (inspect("running", Pid=42, Health={"Status": "unhealthy"}), TaskState.FAILED, "started", UNHEALTHY_ERR, None),
        (inspect("exited"), TaskState.COMPLETE, "finished", None, 0),
        (inspect("exited", ExitCode=3), TaskState.FAILED, "started", "task: non-zero exit (3)", 3),
        (
            inspect("exited", ExitCode=137, OOMKilled=True),
            TaskState.FAILED,
            "started",
            "task: non-zero exit (137)",
            137,
        ),
        (inspect("created", StartedAt="0001-01-01T00:00:00Z"), TaskState.READY, "prepared", None, None),
        (
            inspect("created", ExitCode=127, Error="exec: nope: not found", StartedAt="0001-01-01T00:00:00Z"),
            TaskState.FAILED,
            "starting",
            "exec: nope: not found",
            127,
        ),
        (inspect("dead", ExitCode=0, Error="driver failed"), TaskState.FAILED, "started", "driver failed", 0),
    ],
)
def test_observed_state(
    container: dict[str, Any], state: TaskState, message: str, err: str | None, exit_code: int | None
) -> None:
    observed = observe_container(container)
    assert (observed.task_id, observed.container_id) == ("tid1", "c" * 64)
    assert (observed.state, observed.message, observed.err, observed.exit_code) == (state, message, err, exit_code)


def test_a_container_we_stopped_reads_shutdown_whatever_its_exit_code() -> None:
    assert observe_container(inspect("exited", ExitCode=143), stopped=True).state == TaskState.SHUTDOWN
    assert observe_container(inspect("exited", ExitCode=0), stopped=True).exit_code == 0
    # Still shutting down: it runs until the engine reports it gone.
    assert observe_container(inspect("running", Pid=7), stopped=True).state == TaskState.RUNNING


def test_status_carries_the_container() -> None:
    status = Observed("tid1", "c1", TaskState.RUNNING, "started", pid=42).status()
    assert status.State == TaskState.RUNNING and status.Message == "started" and status.Err is None
    assert status.ContainerStatus is not None
    assert (status.ContainerStatus.ContainerID, status.ContainerStatus.PID) == ("c1", 42)
    rejected = Observed("tid1", "", TaskState.REJECTED, "preparing", "No such image: x").status()
    assert rejected.ContainerStatus is None and rejected.Err == "No such image: x"


def test_plugins_listed_like_swarm() -> None:
    info = {
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "overlay"], "Authorization": None, "Log": ["json-file"]}
    }
    volume_driver = {"Interface": {"Types": [{"Prefix": "docker", "Capability": "volumedriver", "Version": "1.0"}]}}
    managed = [
        {"Name": "vieux/sshfs:latest", "Enabled": True, "Config": volume_driver},
        {"Name": "off/plugin:1", "Enabled": False, "Config": volume_driver},
    ]
    assert engine_plugins(info, managed) == [
        {"Type": "Log", "Name": "json-file"},
        {"Type": "Network", "Name": "bridge"},
        {"Type": "Network", "Name": "overlay"},
        {"Type": "Volume", "Name": "local"},
        {"Type": "Volume", "Name": "vieux/sshfs:latest"},
    ]


def test_no_healthcheck_disables_the_images_own() -> None:
    # `docker service create --no-healthcheck` sends Test ["NONE"]: the engine then ignores the image's HEALTHCHECK.
    body = container_config(make_task({"HealthCheck": {"Test": ["NONE"]}}), "web", "n")
    assert body["Healthcheck"]["Test"] == ["NONE"]


def test_a_task_asking_the_nodes_resolver_gets_the_hosts_dns_options_without_ndots():
    # The engine's embedded DNS does not forward single-label names when ndots is set explicitly.
    assert resolver_options(["ndots:0"]) == ["timeout:5"]
    assert resolver_options(["edns0", "ndots:2", "rotate"]) == ["edns0", "rotate"]
    assert resolver_options(["edns0"]) is None, "nothing to undo: the engine's default"
    task = make_task({})
    with_resolver = host_config(task, resolvers=["10.0.1.1"], dns_options=["timeout:5"])
    assert with_resolver["DnsOptions"] == ["timeout:5"]
    assert host_config(task, dns_options=["timeout:5"]).get("DnsOptions") is None, "no resolver, no options"
    own = make_task({"DNSConfig": {"Options": ["ndots:3"]}})
    assert host_config(own, resolvers=["10.0.1.1"], dns_options=["timeout:5"])["DnsOptions"] == ["ndots:3"]
