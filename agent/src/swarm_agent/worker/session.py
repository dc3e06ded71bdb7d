"""The worker's session with the managers: assignments in, container states out.

One session at a time, with any manager; when it breaks the worker moves to
the next manager it knows of. The engine's container events wake the
reconciler so exits are reported at once rather than at the next poll.
"""

import asyncio
import base64
import contextlib
import json
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp

from .. import pki
from ..api.models import ServiceEndpoint, SubscriptionMessage, Task, TaskState, TaskStatus, TLSInfoSpec
from .container_config import host_ports
from .executor import Executor, Observed
from .logs import LogPublisher
from .node_network import NodeNetwork
from .secret_files import MissingValue, TaskFiles

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 2.0
START_CONCURRENCY = 4
# Containers stopped at once, each waiting up to its grace period in a thread of its own. The threads are the
# process's, not each session's: the default pool has a handful, and a stop holds one through the task's grace
# period; a process running many nodes (swarmd-hollow) would otherwise keep up to this many threads per node.
STOP_CONCURRENCY = 16
STOP_POOL = ThreadPoolExecutor(max_workers=STOP_CONCURRENCY, thread_name_prefix="task-stop")
# How long a manager may take to open a session. A busy manager that answers late has done the work (a session
# held, the node record written); a node that gave up after a few seconds and went to the next manager added that
# work there too, and at thousands of nodes the managers spent their time opening sessions nobody kept.
SESSION_OPEN_TIMEOUT = 30.0
# Waits between failed attempts to open a session grow from this to RECONNECT_MAX, each drawn at random below
# its bound (SwarmKit's agent backs off the same way) so that nodes cut off together do not come back together.
RECONNECT_BASE = 0.2
RECONNECT_MAX = 8.0


class SessionRefused(Exception):
    """A manager refused the session for good (the node was removed)."""


def connection_order(managers: list[str], stay_with_first: bool, rng: random.Random | None = None) -> list[str]:
    """The managers in the order to try them: from a random one on, so that nodes' sessions spread over the
    managers as SwarmKit's agents' do (each manager serves a share of the heartbeats and assignment streams,
    rather than the one every node joined through serving them all). A manager's own node stays with its own."""
    if stay_with_first or len(managers) < 2:
        return list(managers)
    start = (rng or random).randrange(len(managers))
    return managers[start:] + managers[:start]


def reconnect_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` attempts in a row that opened no session."""
    bound = min(RECONNECT_MAX, RECONNECT_BASE * 2 ** min(failures, 16))
    return (rng or random).uniform(bound / 2, bound)


def read_tasks(tasks: list[dict[str, Any]], models: dict[str, Task], read_from: dict[str, dict[str, Any]],
               ) -> tuple[dict[str, Task], dict[str, dict[str, Any]]]:
    """An assignment's tasks by ID, and the JSON each was read from, given those of the assignment before.

    Each assignment carries every task of the node, most of them as in the one before: those keep their model.
    Validating them again was most of the work of a fleet of hollow nodes."""
    wire = {t["ID"]: t for t in tasks}
    return {tid: models[tid] if read_from.get(tid) == t else Task.model_validate(t) for tid, t in wire.items()}, wire


class WorkerSession:
    def __init__(
        self,
        *,
        node_id: str,
        certs: pki.NodeCerts,
        managers: list[str],
        executor: Executor,
        hostname: str,
        on_managers: Callable[[list[str]], None],
        on_role: Callable[[str], None],
        on_authority: Callable[[bytes, bytes], None] = lambda trust, issuer: None,
        network: NodeNetwork | None = None,
        files: TaskFiles | None = None,
        stay_with_first: bool = False,
    ) -> None:
        self.node_id = node_id
        self.certs = certs
        self._ssl = pki.client_context(certs.ca_pem, certs.cert_pem, certs.key_pem)
        self.managers = list(managers)
        self.stay_with_first = stay_with_first  # a manager's own node: its own manager first, always
        self.executor = executor
        self.hostname = hostname
        self.on_managers = on_managers
        self.on_role = on_role
        # Told the roots the managers trust and the CA certificate they sign with, when a heartbeat shows them
        # changed.
        self.on_authority = on_authority
        self._authority_seen: tuple[str | None, str | None] = (None, None)  # (trust roots, issuer) last told of
        # Set when renewed certificates change what the managers should know of this node's TLS (a root rotation).
        self._reopen = asyncio.Event()
        # None on hollow nodes, whose tasks have no containers to network.
        self.network = network
        # None on hollow nodes too: their containers have no files to mount.
        self.files = files
        # Values of the secrets and configs this node's live tasks use: kind -> ID -> bytes. Never logged.
        self.values: dict[str, dict[str, bytes]] = {}
        self._down: set[str] = set()
        self.assigned: dict[str, Task] = {}
        self._assigned_wire: dict[str, dict[str, Any]] = {}  # the JSON each of them was read from
        self.service_names: dict[str, str] = {}
        self.endpoints: dict[str, ServiceEndpoint] = {}
        self.connected_to: str | None = None
        self._sent: dict[str, TaskState] = {}
        self._outbox: dict[str, TaskStatus] = {}
        self._wake = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        # Stops in progress (task ID -> its asyncio task), beside the reconcile passes, in STOP_POOL's threads.
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._have_assignments = False
        self.established = asyncio.Event()
        self.logs = LogPublisher(node_id, executor, certs)

    # ----------------------------------------------------------- lifecycle

    def adopt(self, certs: pki.NodeCerts) -> None:
        """Present renewed certificates from the next connection on; the open session goes on with the old ones."""
        old, self.certs = self.certs, certs
        self._authority_seen = (None, None)
        self.logs.adopt(certs)
        if certs.ca_pem == old.ca_pem and pki.issuer_key_id(certs.cert_pem) == pki.issuer_key_id(old.cert_pem):
            pki.load_chain(self._ssl, certs.cert_pem, certs.key_pem)
            return
        # Other roots or another issuer: a context that trusts the new roots only, and a new session that
        # tells the managers this node's new TLSInfo (as Docker's agent does when its certificate's issuer changes).
        self._ssl = pki.client_context(certs.ca_pem, certs.cert_pem, certs.key_pem)
        self._reopen.set()

    async def run(self) -> None:
        events = asyncio.create_task(self.executor.watch(self._wake.set), name="engine-events")
        reconciler = asyncio.create_task(self._reconcile_loop(), name="reconciler")
        failures = 0
        try:
            while True:
                for addr in connection_order(self.managers, self.stay_with_first):
                    try:
                        await self._serve(addr)
                    except SessionRefused as exc:
                        log.error("node %s: manager %s refused the session: %s", self.node_id, addr, exc)
                        await asyncio.sleep(5)
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                        log.warning("node %s: session with manager %s ended: %s", self.node_id, addr,
                                    str(exc) or type(exc).__name__)
                    # A session that opened ends the run of failures: the next attempt is quick.
                    failures = 0 if self.connected_to else failures + 1
                    self.connected_to = None
                    await asyncio.sleep(reconnect_delay(failures))
        finally:
            events.cancel()
            reconciler.cancel()
            for stopping in list(self._stopping.values()):
                stopping.cancel()
            await self.logs.close()
            self.executor.close()
            if self.network is not None:
                await self.network.close()

    async def _serve(self, addr: str) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=None)
        connector = aiohttp.TCPConnector(ssl=self._ssl)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            base = f"https://{addr}/swarmd"
            description = await asyncio.to_thread(self.executor.describe, self.hostname)
            # The managers fill in the issuer from the certificate this connection presents.
            description.TLSInfo = TLSInfoSpec(TrustRoot=self.certs.ca_pem.decode())
            self._reopen.clear()
            try:
                async with http.post(base + "/session", json={"description": description.wire()},
                                     timeout=aiohttp.ClientTimeout(total=SESSION_OPEN_TIMEOUT)) as resp:
                    body = await resp.json(content_type=None)
            except asyncio.TimeoutError:
                raise aiohttp.ClientError(f"no session opened within {SESSION_OPEN_TIMEOUT:.0f} s") from None
            if resp.status in (403, 404):
                raise SessionRefused(body.get("message", resp.status))
            if resp.status != 200:
                raise aiohttp.ClientError(f"session refused: {body.get('message', resp.status)}")
            self.connected_to = addr
            self.established.set()
            self._learn_managers(body.get("managers") or [])
            log.info("node %s: session open with manager %s", self.node_id, addr)
            # Whatever the previous manager had not yet recorded must be sent again.
            self._sent.clear()
            jobs = [
                asyncio.create_task(self._heartbeats(http, base, int(body["session"]), float(body["heartbeat_period"])),
                                    name="heartbeats"),
                asyncio.create_task(self._assignments(http, base, float(body["heartbeat_period"])), name="assignments"),
                asyncio.create_task(self._reports(http, base, float(body["heartbeat_period"])), name="status reports"),
                asyncio.create_task(self._reopen_wanted(), name="reopen"),
            ]
            try:
                # Whichever job ends, however it ends, ends the session. A job can end cancelled without this
                # session being cancelled: aiohttp's request timeout can cancel its task just after the request
                # completed, and the cancellation then surfaces at the job's next await. Waiting for exceptions
                # only, a session whose heartbeats had stopped that way looked open to its node, whose manager
                # ended it: at 2,500 nodes thousands of nodes stayed down, never knowing.
                done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
                for job in done:
                    if job.cancelled():
                        raise aiohttp.ClientError(f"{job.get_name()} stopped: cancelled")
                    if isinstance(job.exception(), asyncio.TimeoutError):
                        raise aiohttp.ClientError(f"{job.get_name()} timed out")
                    job.result()
                    raise aiohttp.ClientError(f"{job.get_name()} stopped")
            finally:
                for job in jobs:
                    job.cancel()
                for job in jobs:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await job

    async def _reopen_wanted(self) -> None:
        await self._reopen.wait()
        raise aiohttp.ClientError("reopening the session with renewed certificates")

    def _learn_managers(self, managers: list[str]) -> None:
        if managers and sorted(managers) != sorted(self.managers):
            current = self.connected_to
            # Keep the manager we talk to first, so a failover does not bounce back and forth.
            self.managers = ([current] if current in managers else []) + [m for m in managers if m != current]
            self.on_managers(self.managers)

    # ------------------------------------------------------------- streams

    async def _heartbeats(self, http: aiohttp.ClientSession, base: str, session: int, period: float) -> None:
        loop = asyncio.get_running_loop()
        sent = renewed = loop.time()
        while True:
            # A period after the last one was sent, not answered: a late answer is not followed by a whole
            # period of silence.
            await asyncio.sleep(max(0.0, sent + period - loop.time()))
            sent = loop.time()
            try:
                async with http.post(base + "/heartbeat", json={"session": session},
                                     timeout=aiohttp.ClientTimeout(total=2 * period)) as resp:
                    body = await resp.json(content_type=None)
            except asyncio.TimeoutError:
                failure = "no answer"
            else:
                if resp.status == 200:
                    renewed = sent
                    period = float(body.get("heartbeat_period", period))
                    authority = (body.get("trust_root"), body.get("issuer"))
                    # Told only when it differs from the last heartbeat's, or the certificates changed since: each
                    # check verifies a signature, and a fleet of hollow nodes heartbeats hundreds of times a second.
                    if all(authority) and authority != self._authority_seen:
                        self._authority_seen = authority
                        self.on_authority(authority[0].encode(), authority[1].encode())
                    continue
                if resp.status < 500:
                    raise aiohttp.ClientError(f"heartbeat refused: {body.get('message', resp.status)}")
                failure = str(body.get("message", resp.status))
            # A busy manager (slow to answer): the session outlives three periods, so it holds until then. Opening a new one at once would add that work to the manager's load.
            if loop.time() - renewed >= 3 * period:
                raise aiohttp.ClientError(f"heartbeats failed for {3 * period:.0f} s: {failure}")
            log.info("node %s: heartbeat failed (%s); trying again", self.node_id, failure)

    async def _assignments(self, http: aiohttp.ClientSession, base: str, period: float) -> None:
        async with http.get(base + "/assignments") as resp:
            if resp.status != 200:
                raise aiohttp.ClientError(f"assignments refused: HTTP {resp.status}")
            while True:
                # The manager writes at least one line per heartbeat period; silence means it is gone.
                line = await asyncio.wait_for(resp.content.readline(), timeout=3 * period)
                if not line:
                    raise aiohttp.ClientError("assignment stream closed")
                if not line.strip():
                    continue
                message = json.loads(line)
                self.assigned, self._assigned_wire = read_tasks(message["tasks"], self.assigned, self._assigned_wire)
                self.values = {kind: {obj_id: base64.b64decode(data) for obj_id, data in (message.get(kind) or {}).items()}
                               for kind in ("secret", "config")}
                self.service_names = message.get("services") or {}
                self.endpoints = {
                    sid: ServiceEndpoint.model_validate(e) for sid, e in (message.get("endpoints") or {}).items()
                }
                if self.network is not None:
                    await self.network.update(message)
                self._learn_managers(message.get("managers") or [])
                role = (message.get("node") or {}).get("Role")
                if role and role != self.certs.identity.role:
                    self.on_role(role)
                self._have_assignments = True
                self._wake.set()
                self.logs.update([SubscriptionMessage.model_validate(s) for s in message.get("logs") or []],
                                 self.assigned)

    async def _reports(self, http: aiohttp.ClientSession, base: str, period: float) -> None:
        while True:
            await self._outbox_ready.wait()
            # A short pause lets a burst of changes go out as one report.
            await asyncio.sleep(0.05)
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, {}
            down, self._down = self._down, set()
            updates = [{"ID": tid, "Status": status.wire()} for tid, status in batch.items()]
            try:
                async with http.post(base + "/status", json={"updates": updates, "down": sorted(down)},
                                     timeout=aiohttp.ClientTimeout(total=3 * period)) as resp:
                    if resp.status != 200:
                        body = await resp.json(content_type=None)
                        log.warning("node %s: status report refused: %s", self.node_id, body.get("message"))
            except BaseException as exc:
                self._down |= down
                for tid, status in batch.items():
                    self._outbox.setdefault(tid, status)
                    self._sent.pop(tid, None)
                if not isinstance(exc, asyncio.TimeoutError):
                    raise
                # A busy manager: the heartbeats judge whether the session lives. Ending it here made a node
                # open another, busying the managers more, while its old session expired and showed it down.
                log.info("node %s: status report unanswered for %.0f s; sending it again", self.node_id, 3 * period)
                self._outbox_ready.set()

    # ----------------------------------------------------------- reconcile

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=RECONCILE_INTERVAL)
            self._wake.clear()
            if not self._have_assignments:
                continue
            try:
                await self.reconcile()
            except Exception:
                log.exception("node %s: reconcile failed", self.node_id)
            self.logs.poke()

    def _service_name(self, task: Task) -> str:
        # A task's name is "SERVICE.SLOT" (or "SERVICE.NODE"): the fallback when the managers sent no name.
        return self.service_names.get(task.ServiceID) or task.Name.rsplit(".", 1)[0]

    def report_down(self, node_id: str) -> None:
        """Gossip found ``node_id`` dead: tell the managers with the next status report."""
        self._down.add(node_id)
        self._outbox_ready.set()

    def _report(self, task: Task, observed: Observed) -> None:
        """Queue a state for the managers if it moves the task forward and was not already sent."""
        # A terminal state the managers hold is final: after an agent restart a container
        # stopped earlier reads as failed by its exit code, which must not overwrite "shutdown".
        if task.Status.State.terminal or observed.state.rank <= task.Status.State.rank:
            return
        if self._sent.get(task.ID) == observed.state:
            return
        self._sent[task.ID] = observed.state
        self._outbox[task.ID] = observed.status()
        self._outbox_ready.set()

    async def _stop(self, task: Task) -> None:
        """Stop one task's container beside the reconcile passes: a task in its grace period (10 s by default,
        longer for processes that ignore SIGTERM) must not hold back the tasks this node is to start meanwhile,
        such as the replacements of a dead node's tasks."""
        try:
            log.info("node %s: stopping task %s (%s)", self.node_id, task.ID, task.Name)
            loop = asyncio.get_running_loop()
            self._report(task, await loop.run_in_executor(STOP_POOL, self.executor.stop, task))
        except Exception:
            log.exception("node %s: stopping task %s failed; the next pass tries again", self.node_id, task.ID)
        finally:
            self._stopping.pop(task.ID, None)
            self._wake.set()

    async def reconcile(self) -> None:
        observed = await asyncio.to_thread(self.executor.observe_all)
        to_start: list[Task] = []
        to_stop: list[Task] = []
        # Tasks that run here or are about to: only they keep their secret and config files.
        live: set[str] = set()
        for task in self.assigned.values():
            seen = observed.get(task.ID)
            if self.network is not None:
                if task.DesiredState == TaskState.RUNNING and seen is not None and seen.state == TaskState.RUNNING:
                    self.network.publish(task, self._service_name(task), self.endpoints.get(task.ServiceID))
                else:
                    await self.network.withdraw(task.ID)
            if task.DesiredState in (TaskState.RUNNING, TaskState.COMPLETE):  # complete: a job's task
                if seen is None and not task.Status.State.terminal:
                    to_start.append(task)
                    live.add(task.ID)
                elif seen is not None:
                    self._report(task, seen)
                    if not seen.state.terminal:
                        live.add(task.ID)
            elif task.DesiredState.rank < TaskState.RUNNING.rank:
                # Waiting (a restart delay): accepted here, started once desired running.
                self._report(task, Observed(task.ID, "", TaskState.ACCEPTED, "accepted"))
            elif seen is not None and (not seen.state.terminal or seen.container_running):
                # An unhealthy container is reported failed while its process still runs.
                to_stop.append(task)
            else:
                self._report(task, seen or Observed(task.ID, "", TaskState.SHUTDOWN, "shutdown"))
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def start(task: Task) -> None:
            async with gate:
                name = self._service_name(task)
                networks, resolvers = [], []
                if self.network is not None:
                    ready = await self.network.prepare(task)
                    if ready is None:
                        log.debug("node %s: task %s waits for its networks", self.node_id, task.ID)
                        return
                    networks, resolvers = ready
                files = []
                if self.files is not None:
                    try:
                        files = await asyncio.to_thread(self.files.prepare, task, self.values)
                    except MissingValue as exc:
                        self._report(task, Observed(task.ID, "", TaskState.REJECTED, "preparing", str(exc)))
                        return
                log.info("node %s: starting task %s (%s)", self.node_id, task.ID, task.Name)
                ports = host_ports(self.endpoints.get(task.ServiceID))
                self._report(task, await asyncio.to_thread(self.executor.start, task, name, networks, resolvers, ports,
                                                           files))

        for task in to_stop:
            if task.ID not in self._stopping:
                self._stopping[task.ID] = asyncio.create_task(self._stop(task), name=f"stop-{task.ID}")
        await asyncio.gather(*(start(t) for t in to_start))
        if self.files is not None:
            await asyncio.to_thread(self.files.sweep, live)
        if self.network is not None:
            self.network.tasks_known()
        for task_id in observed.keys() - self.assigned.keys() - self._stopping.keys():
            if self.network is not None:
                await self.network.withdraw(task_id)
            log.info("node %s: removing container of task %s, no longer assigned", self.node_id, task_id)
            await asyncio.to_thread(self.executor.remove, task_id)
            self._sent.pop(task_id, None)
