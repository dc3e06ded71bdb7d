"""Hollow nodes: many simulated workers in one process, as Kubernetes' kubemark does.

Each hollow node is a real worker as far as the managers can tell: it joins
with the worker token (its own key, CSR and certificate over real TLS), then
runs an unmodified ``WorkerSession`` (session, heartbeats, assignments, status
reports) and renews its certificate through the agent's own ``Renewal`` (on its
window's schedule, and at once when a root rotation starts or ends). Only the executor is simulated: ``HollowExecutor`` keeps its
"containers" in memory, starts them after a fixed delay and lets a share of
them fail, with the same interface as ``Executor``, so the session cannot
tell the difference.

Hollow nodes keep nothing on disk: a restarted fleet joins as new nodes, and
the old ones go Down when their sessions expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import platform
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .. import pki
from ..api.models import EngineDescription, NodeDescription, PlatformInfo, ResourceObject, Task, TaskState
from .executor import GO_ARCH, LogStream, Observed, engine_plugins
from .join import request_join
from .renewal import Renewal, authority_changed, request_certificate
from .session import WorkerSession

log = logging.getLogger(__name__)

# What a docker.io 20.10 engine lists in ``GET /info`` "Plugins", so a hollow node describes itself like a real one.
ENGINE_VERSION = "20.10.24+dfsg1"
_ENGINE_PLUGINS = {
    "Volume": ["local"],
    "Network": ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"],
    "Log": ["awslogs", "fluentd", "gcplogs", "gelf", "journald", "json-file", "local", "logentries", "splunk",
            "syslog"],
}
# A real container's exit code after ``docker stop`` (SIGTERM), and the one a simulated failure exits with.
STOPPED_EXIT_CODE = 143
FAILED_EXIT_CODE = 1
JOIN_ATTEMPTS = 5


@dataclass
class _Container:
    task_id: str
    container_id: str
    pid: int
    ready_at: float  # clock time at which the simulated process is up (or has failed)
    fails: bool
    stopped_live: bool = False  # stop() ended it while it ran or was about to start


class HollowExecutor:
    """An in-memory stand-in for ``Executor``: same methods, same thread-safety, no engine.

    ``start`` returns at once: a container whose start delay has not passed
    reads READY ("prepared", created but not started), then RUNNING, or FAILED
    with exit code 1 for the share ``failure_rate`` decided by ``rng`` at start.
    ``events`` yields a task ID whenever its container changed, like the
    engine's event stream, so the session reconciles without waiting for its poll.
    """

    def __init__(
        self,
        node_id: str,
        *,
        start_delay: float = 0.5,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        nano_cpus: int = 4_000_000_000,
        memory_bytes: int = 8 << 30,
        engine_labels: dict[str, str] | None = None,
    ) -> None:
        if start_delay < 0:
            raise ValueError(f"start delay must not be negative, got {start_delay}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure rate must be between 0 and 1, got {failure_rate}")
        self.node_id = node_id
        self.start_delay = start_delay
        self.failure_rate = failure_rate
        self.nano_cpus = nano_cpus
        self.memory_bytes = memory_bytes
        self.engine_labels = dict(engine_labels or {})
        self._rng = rng or random.Random()
        self._clock = clock
        self._pids = itertools.count(1000)
        self._cond = threading.Condition()
        self._containers: dict[str, _Container] = {}
        # Containers whose start delay is still running, by due time: events() announces them when due.
        self._due: list[tuple[float, str, str]] = []
        self._changed: list[str] = []
        self._watchers: list[Callable[[], None]] = []  # each tells a watch() that something changed
        self._closed = False

    # ------------------------------------------------------------- node

    def describe(self, hostname: str) -> NodeDescription:
        machine = platform.machine()
        return NodeDescription(
            Hostname=hostname,
            Platform=PlatformInfo(Architecture=GO_ARCH.get(machine, machine), OS="linux"),
            Resources=ResourceObject(NanoCPUs=self.nano_cpus, MemoryBytes=self.memory_bytes),
            Engine=EngineDescription(
                EngineVersion=ENGINE_VERSION,
                Labels=dict(self.engine_labels),
                Plugins=engine_plugins({"Plugins": _ENGINE_PLUGINS}, []),
            ),
        )

    # ---------------------------------------------------------- observe

    def _observe(self, box: _Container, now: float) -> Observed:
        started = now >= box.ready_at
        if box.stopped_live:
            return Observed(box.task_id, box.container_id, TaskState.SHUTDOWN, "shutdown",
                            exit_code=STOPPED_EXIT_CODE if started else None)
        if not started:
            return Observed(box.task_id, box.container_id, TaskState.READY, "prepared")
        if box.fails:
            return Observed(box.task_id, box.container_id, TaskState.FAILED, "started",
                            f"task: non-zero exit ({FAILED_EXIT_CODE})", exit_code=FAILED_EXIT_CODE)
        return Observed(box.task_id, box.container_id, TaskState.RUNNING, "started", pid=box.pid)

    def observe(self, task_id: str) -> Observed | None:
        with self._cond:
            box = self._containers.get(task_id)
            return self._observe(box, self._clock()) if box else None

    def observe_all(self) -> dict[str, Observed]:
        with self._cond:
            now = self._clock()
            return {task_id: self._observe(box, now) for task_id, box in self._containers.items()}

    # ------------------------------------------------------ start, stop

    def _notify(self, task_id: str) -> None:
        self._changed.append(task_id)
        self._cond.notify_all()
        for watcher in self._watchers:
            watcher()

    def start(self, task: Task, service_name: str, networks: Sequence[Any] = (), resolvers: Sequence[str] = (),
              ports: Sequence[Any] = (), files: Sequence[Any] = ()) -> Observed:
        with self._cond:
            now = self._clock()
            existing = self._containers.get(task.ID)
            if existing is not None:
                log.info("task %s already has hollow container %s, not starting it again",
                         task.ID, existing.container_id[:12])
                return self._observe(existing, now)
            box = _Container(
                task_id=task.ID,
                container_id=secrets.token_hex(32),
                pid=next(self._pids),
                ready_at=now + self.start_delay,
                fails=self._rng.random() < self.failure_rate,
            )
            self._containers[task.ID] = box
            if self.start_delay > 0:
                heapq.heappush(self._due, (box.ready_at, task.ID, box.container_id))
            self._notify(task.ID)
            log.debug("task %s (%s): hollow container %s created on node %s", task.ID, service_name,
                     box.container_id[:12], self.node_id)
            return self._observe(box, now)

    def stop(self, task: Task) -> Observed:
        with self._cond:
            box = self._containers.get(task.ID)
            if box is None:
                return Observed(task.ID, "", TaskState.SHUTDOWN, "shutdown")
            now = self._clock()
            current = self._observe(box, now)
            if current.state.terminal:
                return current  # it ended on its own: keep the state it ended in
            box.stopped_live = True
            self._notify(task.ID)
            log.debug("task %s: stopped hollow container %s", task.ID, box.container_id[:12])
            return self._observe(box, now)

    def remove(self, task_id: str) -> None:
        with self._cond:
            box = self._containers.pop(task_id, None)
            if box is None:
                return
            self._notify(task_id)
        log.debug("task %s: removed hollow container %s", task_id, box.container_id[:12])

    # ----------------------------------------------------------- events

    def logs(self, container_id: str, source: str, *, follow: bool, since: float | None,
             tail: int | None) -> LogStream:
        """Simulated processes print nothing."""
        return LogStream((), lambda: None)

    def _take_events(self) -> list[str]:
        """Task IDs changed since the last call, and those whose start delay has passed (lock held)."""
        now = self._clock()
        out, self._changed = self._changed, []
        while self._due and self._due[0][0] <= now:
            _, task_id, container_id = heapq.heappop(self._due)
            box = self._containers.get(task_id)
            if box is not None and box.container_id == container_id:
                out.append(task_id)
        return out

    def events(self, since: float | None = None) -> Iterator[str]:
        """Task IDs whose container changed; ends when ``close()`` is called.

        ``since`` is accepted for ``Executor``'s interface: nothing is lost
        between two iterators here, since changes queue until one takes them.
        """
        while True:
            with self._cond:
                if self._closed:
                    return
                ready = self._take_events()
                if not ready:
                    timeout = max(0.0, self._due[0][0] - self._clock()) if self._due else None
                    self._cond.wait(timeout)
                    continue
            yield from ready

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever a container changed or came up, until cancelled, as ``Executor.watch`` does but
        without a thread: a fleet runs thousands of nodes in one process, and a thread each (12,000 in all, with
        their stop pools) kept the fleet's event loop waiting for the interpreter lock for seconds at a time."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def watcher() -> None:  # from any thread, the lock held
            loop.call_soon_threadsafe(changed.set)

        with self._cond:
            self._watchers.append(watcher)
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return
                    # Cleared before taking the changes, under the lock: a change made after is set again.
                    changed.clear()
                    ready = self._take_events()
                    due = max(0.0, self._due[0][0] - self._clock()) if self._due else None
                if ready:
                    wake()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due):
                        await changed.wait()
        finally:
            with self._cond:
                self._watchers.remove(watcher)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for watcher in self._watchers:
                watcher()


# ---------------------------------------------------------------- joining


# ------------------------------------------------------------------ fleet


@dataclass(frozen=True)
class HollowConfig:
    manager: str  # HOST:PORT of the manager to join through
    token: str
    count: int
    start_delay: float = 0.5
    failure_rate: float = 0.0
    name_prefix: str = "hollow"
    seed: int | None = None
    join_concurrency: int = 8
    nano_cpus: int = 4_000_000_000
    memory_bytes: int = 8 << 30
    engine_labels: dict[str, str] = field(default_factory=dict)
    renew_window: tuple[float, float] = pki.RENEW_WINDOW


@dataclass
class HollowNode:
    hostname: str
    node_id: str
    executor: HollowExecutor
    session: WorkerSession
    task: asyncio.Task[None] | None = None
    renewal_task: asyncio.Task[None] | None = None


class HollowFleet:
    """``count`` hollow nodes, joined a few at a time, each with its own session."""

    def __init__(self, config: HollowConfig) -> None:
        if config.count < 1:
            raise ValueError(f"a fleet needs at least one node, got {config.count}")
        self.config = config
        self.nodes: list[HollowNode] = []
        self.managers = [config.manager]
        self._seeds = random.Random(config.seed)
        self.all_joined = asyncio.Event()

    def hostname(self, index: int) -> str:
        width = max(4, len(str(self.config.count)))
        return f"{self.config.name_prefix}-{index:0{width}d}"

    def _learn_managers(self, managers: list[str]) -> None:
        if managers:
            self.managers = list(managers)

    def _role_wanted(self, hostname: str, role: str) -> None:
        log.warning("hollow node %s was asked to become a %s; hollow nodes stay workers", hostname, role)

    async def _join_one(self, index: int, gate: asyncio.Semaphore) -> HollowNode:
        hostname = self.hostname(index)
        rng = random.Random(self._seeds.getrandbits(64))
        async with gate:
            for attempt in range(1, JOIN_ATTEMPTS + 1):
                addr = self.managers[(index + attempt) % len(self.managers)]
                try:
                    result, key = await request_join(addr, self.config.token, hostname=hostname)
                    break
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    if attempt == JOIN_ATTEMPTS:
                        raise
                    log.warning("hollow node %s could not join through %s (attempt %d): %s",
                                hostname, addr, attempt, exc or type(exc).__name__)
                    await asyncio.sleep(0.5 * attempt)
        certs = pki.NodeCerts.granted(result, key)
        node_id = result["node_id"]
        self._learn_managers(result.get("managers") or [])
        executor = HollowExecutor(
            node_id,
            start_delay=self.config.start_delay,
            failure_rate=self.config.failure_rate,
            rng=rng,
            nano_cpus=self.config.nano_cpus,
            memory_bytes=self.config.memory_bytes,
            engine_labels=self.config.engine_labels,
        )
        async def renew() -> bool:
            granted = await request_certificate(session.certs, self.managers, "worker")
            if granted is None:
                return False
            renewed = pki.NodeCerts.granted(*granted)
            try:
                renewed.check()
            except ValueError as exc:
                log.error("hollow node %s: the renewed certificate is unusable: %s", hostname, exc)
                return False
            session.adopt(renewed)
            return True

        renewal = Renewal(lambda: session.certs.identity, renew, self.config.renew_window)
        session = WorkerSession(
            node_id=node_id,
            certs=certs,
            managers=list(self.managers),
            executor=executor,  # type: ignore[arg-type]  # same interface as Executor, by design
            hostname=hostname,
            on_managers=self._learn_managers,
            on_role=lambda role: self._role_wanted(hostname, role),
            on_authority=lambda trust, issuer: (
                renewal.wake() if authority_changed(session.certs, trust, issuer) else None),
        )
        node = HollowNode(hostname=hostname, node_id=node_id, executor=executor, session=session)
        node.task = asyncio.create_task(session.run(), name=f"hollow-{hostname}")
        node.renewal_task = asyncio.create_task(renewal.run(), name=f"hollow-renewal-{hostname}")
        # Recorded here rather than by the caller, so a failing join elsewhere cannot orphan this session.
        self.nodes.append(node)
        log.info("hollow node %s joined as %s", hostname, node_id)
        return node

    async def run(self) -> None:
        """Join every node, then keep their sessions until cancelled."""
        gate = asyncio.Semaphore(self.config.join_concurrency)
        started = time.monotonic()
        joins = [asyncio.create_task(self._join_one(i, gate)) for i in range(1, self.config.count + 1)]
        try:
            await asyncio.gather(*joins)
            log.info("all %d hollow nodes joined in %.1fs", len(self.nodes), time.monotonic() - started)
            self.all_joined.set()
            await asyncio.gather(*(node.task for node in self.nodes if node.task))
        finally:
            for join in joins:
                join.cancel()
            running = [t for node in self.nodes for t in (node.task, node.renewal_task) if t]
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for join in joins:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await join
