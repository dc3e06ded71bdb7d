"""The log broker: ``docker service logs`` gathered from the nodes that run the tasks, as SwarmKit's logbroker does.

Workers listen on no port, so the lines come to the manager: the manager serving the client records a
subscription under ``/swarm/logs/<id>`` (selector, options, its own address) held by a lease it keeps alive
while the client listens. Every dispatcher hands the subscription to the nodes it concerns along with their
assignments, so a worker hears of it as soon as the record reaches its manager's cache (one etcd watch event
and one assignment message: milliseconds). The worker reads its containers' logs from its own engine and
posts them in batches to the manager named in the record (``POST /swarmd/logs/<id>``), which checks that each
line comes from a task of that node and writes it to the client.

Without follow, the stream ends once every node expected to answer has said it sent everything (``Close``).
A node with no session is skipped at once, and one that sends nothing for ``IDLE_TIMEOUT`` is given up: both
are named in a warning at the end of the stream, as Docker does. With follow, the stream lasts until the
client goes; the record then goes with its lease, and the workers stop reading.
"""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..api.app import Route, json_response, read_body
from ..api.errors import BadRequest, Forbidden, NotFound
from ..api.models import (
    LogContext,
    LogMessage,
    LogSelector,
    LogSubscriptionOptions,
    PublishLogsMessage,
    SubscriptionMessage,
    Task,
    TaskState,
)
from ..store.etcd import EtcdError
from ..store.state import LOG_SUBSCRIPTIONS
from .dispatcher import manager_of, node_of

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger(__name__)

# How long a subscription outlives a manager that died while serving it (seconds).
SUBSCRIPTION_TTL = 10
# How long a stream without follow waits for a node that has said nothing yet (seconds).
IDLE_TIMEOUT = 10.0
# How often a quiet stream checks whether its client is still there (seconds).
CLIENT_CHECK = 1.0


class Subscription:
    """One client's log stream on this manager: the lines nodes sent, and who still owes an answer."""

    def __init__(self, message: SubscriptionMessage, warnings: list[str]) -> None:
        self.message = message
        self.pending = set(message.Nodes)
        self.warnings = warnings
        self._queue: asyncio.Queue[list[LogMessage]] = asyncio.Queue()

    @property
    def follow(self) -> bool:
        return self.message.Options.Follow

    def deliver(self, node_id: str, messages: list[LogMessage], close: bool) -> None:
        if close:
            self.pending.discard(node_id)
        # Even an empty batch wakes the reader: a Close may be what it waits for.
        self._queue.put_nowait(messages)

    async def batches(self, client_gone: Callable[[], bool]) -> AsyncIterator[list[LogMessage]]:
        """Lines as nodes send them, until every expected node is done (never, with follow) or the client goes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + IDLE_TIMEOUT
        while self.follow or self.pending or not self._queue.empty():
            try:
                batch = await asyncio.wait_for(self._queue.get(), timeout=CLIENT_CHECK)
            except asyncio.TimeoutError:
                if client_gone():
                    return
                if not self.follow and loop.time() >= deadline:
                    for node_id in sorted(self.pending):
                        self.warnings.append(f"node {node_id} did not answer within {IDLE_TIMEOUT:.0f}s")
                    log.warning("log subscription %s: gave up waiting for nodes %s", self.message.ID,
                                ", ".join(sorted(self.pending)))
                    return
                continue
            deadline = loop.time() + IDLE_TIMEOUT
            yield batch

    def incomplete(self) -> str | None:
        """Docker's words for a stream that misses some tasks' logs, or None."""
        if not self.warnings:
            return None
        return ("warning: incomplete log stream. some logs could not be retrieved for the following reasons: "
                + ", ".join(self.warnings))


class LogBroker:
    def __init__(self, mgr: "Manager") -> None:
        self.mgr = mgr
        self._served: dict[str, Subscription] = {}

    @contextlib.asynccontextmanager
    async def subscribe(self, selector: LogSelector, options: LogSubscriptionOptions) -> AsyncIterator[Subscription]:
        """Open a subscription for the duration of the ``async with``; the record goes when it ends."""
        state = self.mgr.cache.state
        selected = [state.tasks[t] for t in selector.TaskIDs if t in state.tasks]
        for service_id in selector.ServiceIDs:
            tasks = (state.tasks[t] for t in state.tasks_by_service.get(service_id, ()) if t in state.tasks)
            # Without follow, as in Swarm: tasks that never ran have nothing to show.
            selected += [t for t in tasks if options.Follow or t.Status.State.rank >= TaskState.RUNNING.rank]
        warnings = [f"task {t.ID} has not been scheduled" for t in selected if not t.NodeID]
        nodes = {t.NodeID for t in selected if t.NodeID}
        absent = sorted(n for n in nodes if n not in state.sessions)
        warnings += [f"node {n} is not available" for n in absent]
        message = SubscriptionMessage(
            ID=secrets.token_hex(12), Selector=selector, Options=options, Manager=self.mgr.api_addr,
            Nodes=[] if options.Follow else sorted(nodes - set(absent)),
        )
        sub = Subscription(message, warnings)
        if not options.Follow and not sub.pending:
            yield sub  # nobody to ask: no record
            return
        lease = await self.mgr.store.etcd.lease_grant(SUBSCRIPTION_TTL)
        self._served[message.ID] = sub
        keeper = asyncio.create_task(self._keep_alive(message.ID, lease), name=f"logs-{message.ID}")
        try:
            await self.mgr.store.put_json(LOG_SUBSCRIPTIONS + message.ID, message.wire(), lease=lease)
            log.info("log subscription %s opened: services %s tasks %s follow=%s, nodes %s", message.ID,
                     selector.ServiceIDs, selector.TaskIDs, options.Follow, message.Nodes or "(every node with a task)")
            yield sub
        finally:
            self._served.pop(message.ID, None)
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(EtcdError):
                await self.mgr.store.etcd.lease_revoke(lease)
            log.info("log subscription %s closed", message.ID)

    async def _keep_alive(self, sub_id: str, lease: int) -> None:
        while True:
            await asyncio.sleep(SUBSCRIPTION_TTL / 3)
            try:
                await self.mgr.store.etcd.lease_keepalive(lease)
            except EtcdError as exc:
                log.warning("log subscription %s: could not renew its lease: %s", sub_id, exc)

    def served(self, sub_id: str) -> Subscription | None:
        return self._served.get(sub_id)

    async def task_of(self, task_id: str) -> Task | None:
        task = self.mgr.cache.state.tasks.get(task_id)
        if task is None:
            # The node may have heard of the task from a manager whose cache is ahead of ours.
            await self.mgr.cache.barrier()
            task = self.mgr.cache.state.tasks.get(task_id)
        return task


async def publish_logs(request: web.Request) -> web.Response:
    """A batch of a worker's log lines for a subscription this manager serves; only its own tasks' lines."""
    mgr = manager_of(request)
    node_id = node_of(request)
    sub_id = request.match_info["id"]
    body: PublishLogsMessage = await read_body(request, "log publication")
    if body.SubscriptionID != sub_id:
        raise BadRequest(f"SubscriptionID: {body.SubscriptionID!r} does not match the path's {sub_id!r}")
    tasks: list[Task] = []
    # Every line is checked before any is passed on: a bad batch is refused whole.
    for i, msg in enumerate(body.Messages):
        task = await mgr.logs.task_of(msg.Context.TaskID)
        if task is None or task.NodeID != node_id:
            raise Forbidden(f"Messages.{i}.Context.TaskID: task {msg.Context.TaskID} is not assigned to node {node_id}")
        tasks.append(task)
    sub = mgr.logs.served(sub_id)
    if sub is None:
        raise NotFound(f"log subscription {sub_id} is not open on this manager")
    for i, (msg, task) in enumerate(zip(body.Messages, tasks)):
        if not sub.message.selects(task):
            raise BadRequest(f"Messages.{i}.Context.TaskID: task {task.ID} is not selected by log subscription {sub_id}")
        if msg.Stream not in sub.message.Options.Streams:
            raise BadRequest(f"Messages.{i}.Stream: {msg.Stream} was not asked for")
        # The manager has the final say on where a line comes from.
        msg.Context = LogContext(NodeID=node_id, ServiceID=task.ServiceID, TaskID=task.ID)
    sub.deliver(node_id, body.Messages, body.Close)
    if body.Close:
        log.debug("log subscription %s: node %s sent everything", sub_id, node_id)
    return json_response({})


ROUTES = [
    Route("POST", "/swarmd/logs/{id}", publish_logs, "node", body=PublishLogsMessage),
]
