"""The worker's executor: tasks as containers on the node's own Docker engine.

Synchronous on purpose: the session calls it through ``asyncio.to_thread``, one
call at a time, while ``events()`` may run in a second thread (it has its own
connection to the engine, so a blocking event stream never holds up a start).

Observed states, from the container's state as the engine reports it:

========================================  =========  ==========================================
container                                  state      message / err
========================================  =========  ==========================================
created, never started                     READY      "prepared" (Swarm creates in its prepare step)
created, start failed (State.Error set)    FAILED     err: the engine's start error
running, no health check                   RUNNING    "started"
running, health "starting"                 STARTING   "starting"
running, health "healthy"                  RUNNING    "started"
running, health "unhealthy"                FAILED     err "dockerexec: unhealthy container" (Swarm's
                                                      words); ``container_running`` stays true
                                                      until the session stops it
exited 0                                   COMPLETE   "finished"
exited N != 0                              FAILED     err "task: non-zero exit (N)"
OOM-killed                                 FAILED     err "task: non-zero exit (137)"
stopped by ``stop()``                      SHUTDOWN   "shutdown"
image missing and not pullable             REJECTED   err "No such image: IMAGE"
create refused by the engine               REJECTED   err: the engine's message
========================================  =========  ==========================================

Which containers ``stop()`` stopped is remembered in memory only: the engine
keeps no trace of who stopped a container. After an agent restart an exited
container is reported by its exit code; the managers already hold the
SHUTDOWN reported before the restart, and a terminal state is final there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.utils import parse_repository_tag

from ..api.models import (
    EngineDescription,
    Mount,
    NodeDescription,
    PlatformInfo,
    ResourceObject,
    Task,
    TaskContainerStatus,
    TaskState,
    TaskStatus,
)
from ..net.dns.upstream import resolv_conf_options
from .container_config import (
    API_VERSION,
    LABEL_NODE_ID,
    LABEL_TASK_ID,
    HostPort,
    NetworkPlan,
    container_config,
    container_name,
    endpoint_config,
    resolver_options,
    stop_grace_seconds,
)

log = logging.getLogger(__name__)

# Go's names, which placement constraints (node.platform.arch) and the CLI use.
GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# Plugin interface names (managed plugins) as Swarm reports them in a node description.
_PLUGIN_TYPES = {
    "volumedriver": "Volume",
    "networkdriver": "Network",
    "ipamdriver": "IPAM",
    "logdriver": "Log",
    "authz": "Authorization",
}

# Container events after which a task's observed state may have changed.
_WATCHED_ACTIONS = frozenset({"create", "start", "die", "oom", "health_status", "destroy"})

_LIVE = frozenset({"running", "paused", "restarting"})
_NEVER = "0001-01-01T00:00:00Z"
UNHEALTHY_ERR = "dockerexec: unhealthy container"
OOM_EXIT_CODE = 137


@dataclass(frozen=True)
class Observed:
    """What the engine says about one task's container."""

    task_id: str
    container_id: str
    state: TaskState
    message: str
    err: str | None = None
    exit_code: int | None = None
    pid: int | None = None

    @property
    def container_running(self) -> bool:
        """The process still runs, even if the task already failed (an unhealthy container): stop it."""
        return self.pid is not None

    def status(self) -> TaskStatus:
        container = (
            TaskContainerStatus(ContainerID=self.container_id, PID=self.pid, ExitCode=self.exit_code)
            if self.container_id
            else None
        )
        return TaskStatus(State=self.state, Message=self.message, Err=self.err, ContainerStatus=container)


def observe_container(inspect: dict[str, Any], stopped: bool = False) -> Observed:
    """Translate ``GET /containers/ID/json`` into a task state; ``stopped``: ``stop()`` stopped it."""
    task_id = (inspect.get("Config") or {}).get("Labels", {}).get(LABEL_TASK_ID, "")
    cid = inspect["Id"]
    st = inspect.get("State") or {}
    status = st.get("Status", "")
    engine_error = st.get("Error") or ""
    exit_code = st.get("ExitCode")

    if status in _LIVE:
        pid = st.get("Pid") or None
        health = (st.get("Health") or {}).get("Status")
        if health == "starting":
            return Observed(task_id, cid, TaskState.STARTING, "starting", pid=pid)
        if health == "unhealthy":
            return Observed(task_id, cid, TaskState.FAILED, "started", UNHEALTHY_ERR, pid=pid)
        return Observed(task_id, cid, TaskState.RUNNING, "started", pid=pid)

    if stopped:
        code = exit_code if status != "created" else None
        return Observed(task_id, cid, TaskState.SHUTDOWN, "shutdown", exit_code=code)

    if status == "created":
        if engine_error:
            return Observed(task_id, cid, TaskState.FAILED, "starting", engine_error, exit_code=exit_code)
        return Observed(task_id, cid, TaskState.READY, "prepared")

    # exited, dead, removing
    if st.get("OOMKilled"):
        return Observed(
            task_id, cid, TaskState.FAILED, "started", f"task: non-zero exit ({OOM_EXIT_CODE})", exit_code=OOM_EXIT_CODE
        )
    if exit_code == 0 and not engine_error:
        return Observed(task_id, cid, TaskState.COMPLETE, "finished", exit_code=0)
    if exit_code:
        err = f"task: non-zero exit ({exit_code})" + (f": {engine_error}" if engine_error else "")
    else:
        err = engine_error or f"container {status or 'gone'}"
    return Observed(task_id, cid, TaskState.FAILED, "started", err, exit_code=exit_code)


def _never_started(inspect: dict[str, Any]) -> bool:
    st = inspect.get("State") or {}
    return st.get("Status") == "created" and not st.get("Error") and st.get("StartedAt", _NEVER) == _NEVER


def engine_plugins(info: dict[str, Any], managed: list[dict[str, Any]]) -> list[dict[str, str]]:
    found: set[tuple[str, str]] = set()
    legacy = info.get("Plugins") or {}
    for kind in ("Volume", "Network", "Authorization", "Log"):
        found.update((kind, name) for name in legacy.get(kind) or [])
    # Swarm always lists its built-in multi-host driver, whether or not the engine does.
    found.add(("Network", "overlay"))
    for plugin in managed:
        if not plugin.get("Enabled"):
            continue
        for iface in ((plugin.get("Config") or {}).get("Interface") or {}).get("Types") or []:
            kind = _PLUGIN_TYPES.get(str(iface.get("Capability", "")).lower())
            if kind:
                found.add((kind, plugin.get("Name", "")))
    return [{"Type": kind, "Name": name} for kind, name in sorted(found)]


def _engine_labels(entries: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for entry in entries or []:
        key, _, value = entry.partition("=")
        labels[key] = value
    return labels


class LogStream:
    """One stream of a container's log; ``close()`` from any thread ends it, even while another thread reads it."""

    def __init__(self, chunks: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        self._on_close()


class Executor:
    """Runs this node's tasks on the Docker engine at ``docker_url``."""

    def __init__(self, docker_url: str, node_id: str) -> None:
        self.docker_url = docker_url
        self.node_id = node_id
        self._api = docker.APIClient(base_url=docker_url, version=API_VERSION)
        self._lock = threading.Lock()
        # Container IDs stop() stopped, so their exit reads SHUTDOWN, not FAILED.
        self._stopped: set[str] = set()
        self._streams: list[Any] = []
        self._closed = False

    # ------------------------------------------------------------- node

    def describe(self, hostname: str) -> NodeDescription:
        info = self._api.info()
        arch = info.get("Architecture", "")
        go_arch = GO_ARCH.get(arch) or self._api.version().get("Arch") or arch
        try:
            managed = self._api.plugins()
        except APIError as exc:
            log.warning("engine %s did not list its managed plugins: %s", self.docker_url, exc)
            managed = []
        return NodeDescription(
            Hostname=hostname,
            Platform=PlatformInfo(Architecture=go_arch, OS=info.get("OSType", "")),
            Resources=ResourceObject(
                NanoCPUs=int(info.get("NCPU", 0)) * 1_000_000_000, MemoryBytes=info.get("MemTotal", 0)
            ),
            Engine=EngineDescription(
                EngineVersion=info.get("ServerVersion", ""),
                Labels=_engine_labels(info.get("Labels")),
                Plugins=engine_plugins(info, managed),
            ),
        )

    # ---------------------------------------------------------- observe

    def _node_filter(self, *more: str) -> dict[str, list[str]]:
        return {"label": [f"{LABEL_NODE_ID}={self.node_id}", *more]}

    def _find(self, task_id: str) -> dict[str, Any] | None:
        """Inspect the container of ``task_id`` on this node, or None."""
        found = self._api.containers(all=True, filters=self._node_filter(f"{LABEL_TASK_ID}={task_id}"))
        if not found:
            return None
        try:
            return self._api.inspect_container(found[0]["Id"])
        except NotFound:
            return None  # removed between list and inspect

    def _observe(self, inspect: dict[str, Any]) -> Observed:
        with self._lock:
            stopped = inspect["Id"] in self._stopped
        return observe_container(inspect, stopped)

    def observe(self, task_id: str) -> Observed | None:
        """The state of one task's container, or None when it has none here."""
        inspect = self._find(task_id)
        return self._observe(inspect) if inspect else None

    def observe_all(self) -> dict[str, Observed]:
        out: dict[str, Observed] = {}
        for summary in self._api.containers(all=True, filters=self._node_filter(LABEL_TASK_ID)):
            try:
                inspect = self._api.inspect_container(summary["Id"])
            except NotFound:
                continue
            observed = self._observe(inspect)
            if observed.task_id:
                out[observed.task_id] = observed
        return out

    # ------------------------------------------------------------ start

    def _image_present(self, image: str) -> bool:
        try:
            self._api.inspect_image(image)
            return True
        except ImageNotFound:
            return False

    def _pull(self, image: str) -> bool:
        repository, tag = parse_repository_tag(image)
        try:
            # A pull reports most failures inside the stream, not as an HTTP status.
            for line in self._api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in line:
                    log.warning("pull of image %s failed: %s", image, line["error"])
                    return False
        except APIError as exc:
            log.warning("pull of image %s failed: %s", image, exc.explanation or exc)
            return False
        return self._image_present(image)

    def _rejected(self, task: Task, err: str) -> Observed:
        log.warning("task %s rejected: %s", task.ID, err)
        return Observed(task.ID, "", TaskState.REJECTED, "preparing", err)

    def start(self, task: Task, service_name: str, networks: Sequence[NetworkPlan] = (),
              resolvers: Sequence[str] = (), ports: Sequence[HostPort] = (), files: Sequence[Mount] = ()) -> Observed:
        """Create (if needed) and start the task's container, on ``networks`` with these addresses, with
        ``files`` (its secrets and configs) mounted."""
        existing = self._find(task.ID)
        if existing is not None and not _never_started(existing):
            observed = self._observe(existing)
            log.info(
                "task %s already has container %s (%s), not starting it again",
                task.ID,
                existing["Id"][:12],
                observed.state.value,
            )
            return observed
        if existing is not None:
            cid = existing["Id"]
        else:
            image = task.Spec.ContainerSpec.Image
            if not self._image_present(image) and not self._pull(image):
                return self._rejected(task, f"No such image: {image}")
            config = container_config(task, service_name, self.node_id, self._api.api_version, networks, resolvers,
                                      ports, files, resolver_options(resolv_conf_options()) if resolvers else None)
            try:
                cid = self._api.create_container_from_config(config, name=container_name(task))["Id"]
                for plan in networks[1:]:
                    endpoint = endpoint_config(plan, task, self._api.api_version)
                    self._api.connect_container_to_network(
                        cid, plan.engine_network, ipv4_address=plan.address, aliases=endpoint.get("Aliases"),
                    )
            except ImageNotFound:
                return self._rejected(task, f"No such image: {image}")
            except APIError as exc:
                return self._rejected(task, str(exc.explanation or exc))
            log.info("task %s: created container %s (%s)", task.ID, cid[:12], container_name(task))
        try:
            self._api.start(cid)
        except APIError as exc:
            message = str(exc.explanation or exc)
            log.warning("task %s: container %s failed to start: %s", task.ID, cid[:12], message)
            observed = self.observe(task.ID)
            exit_code = observed.exit_code if observed else None
            return Observed(task.ID, cid, TaskState.FAILED, "starting", message, exit_code=exit_code)
        log.info("task %s: started container %s", task.ID, cid[:12])
        return self._observe(self._api.inspect_container(cid))

    # ------------------------------------------------------- stop/remove

    def stop(self, task: Task) -> Observed:
        inspect = self._find(task.ID)
        if inspect is None:
            return Observed(task.ID, "", TaskState.SHUTDOWN, "shutdown")
        cid = inspect["Id"]
        if (inspect.get("State") or {}).get("Status") not in _LIVE and not _never_started(inspect):
            return self._observe(inspect)  # it ended on its own: keep the state it ended in
        with self._lock:
            self._stopped.add(cid)
        grace = stop_grace_seconds(task.Spec.ContainerSpec)
        # The engine sends the container's own StopSignal, set from the spec at create time.
        try:
            self._api.stop(cid, timeout=grace)
        except NotFound:
            return Observed(task.ID, "", TaskState.SHUTDOWN, "shutdown")
        log.info("task %s: stopped container %s (grace %ss)", task.ID, cid[:12], grace)
        after = self._find(task.ID)
        return self._observe(after) if after else Observed(task.ID, "", TaskState.SHUTDOWN, "shutdown")

    def remove(self, task_id: str) -> None:
        inspect = self._find(task_id)
        if inspect is None:
            return
        try:
            self._api.remove_container(inspect["Id"], force=True, v=False)
        except NotFound:
            return
        with self._lock:
            self._stopped.discard(inspect["Id"])
        log.info("task %s: removed container %s", task_id, inspect["Id"][:12])

    # ------------------------------------------------------------- logs

    def logs(self, container_id: str, source: str, *, follow: bool, since: float | None,
             tail: int | None) -> LogStream:
        """The ``source`` ("stdout" or "stderr") of a container's log, each line after the engine's timestamp.

        One chunk per line for a container without a TTY; the raw bytes otherwise. A connection of its
        own, as a followed log blocks it for as long as the container runs.
        """
        api = docker.APIClient(base_url=self.docker_url, version=API_VERSION)
        try:
            stream = api.logs(container_id, stdout=source == "stdout", stderr=source == "stderr", stream=True,
                              follow=follow, timestamps=True, since=since, tail="all" if tail is None else tail)
        except BaseException:
            api.close()
            raise

        def close() -> None:
            try:
                stream.close()
            except OSError:
                pass  # already closed by the engine
            api.close()

        return LogStream(stream, close)

    # ----------------------------------------------------------- events

    def events(self, since: float | None = None) -> Iterator[str]:
        """Task IDs whose container changed, as the engine reports them.

        Ends when ``close()`` is called or when the engine closes the stream
        (it restarted): the caller then reopens it with ``since`` set to the
        time it last heard from the engine, so nothing is missed in between.
        """
        # A connection of its own: this one blocks for as long as the stream lasts.
        api = docker.APIClient(base_url=self.docker_url, version=API_VERSION)
        try:
            stream = api.events(
                since=f"{since:.9f}" if since is not None else None,
                filters={"type": ["container"], **self._node_filter()},
                decode=True,
            )
            with self._lock:
                if self._closed:
                    stream.close()
                    return
                self._streams.append(stream)
            try:
                for event in stream:
                    action = str(event.get("Action") or event.get("status") or "")
                    # Health events read "health_status: healthy"; exec events are not ours.
                    if action.split(":", 1)[0] not in _WATCHED_ACTIONS:
                        continue
                    task_id = ((event.get("Actor") or {}).get("Attributes") or {}).get(LABEL_TASK_ID)
                    if task_id:
                        yield task_id
            finally:
                with self._lock:
                    if stream in self._streams:
                        self._streams.remove(stream)
                stream.close()
        finally:
            api.close()

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` on the event loop whenever a container of this node changes, until cancelled.

        The engine's event stream blocks, so a thread of its own reads it, and reopens it when the engine
        restarts; a change missed meanwhile is found by the session's next periodic pass."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    for _ in self.events():
                        loop.call_soon_threadsafe(wake)
                except Exception as exc:  # the engine restarting ends the stream; open it again
                    log.debug("engine event stream ended: %s", exc)
                stop.wait(1)

        threading.Thread(target=pump, name="engine-events", daemon=True).start()
        try:
            await asyncio.Event().wait()
        finally:
            stop.set()

    def close(self) -> None:
        """End every ``events()`` iterator, from any thread; later ``events()`` calls end at once."""
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.close()
            except OSError:
                pass  # already closed by the engine
        self._api.close()
