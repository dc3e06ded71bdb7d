"""This node's part of ``docker service logs``: its tasks' output, sent to the manager serving the client.

Log subscriptions (``manager/logbroker.py``) arrive with the assignments. For each, the node reads the log
of every selected task's container from its own engine, one thread per container stream (a followed log
blocks its reader for as long as the container runs, so not the shared thread pool), and posts the lines in
batches to the manager named in the subscription over mutual TLS. Without follow: what the containers hold
now, then ``Close``. With follow: each container's log until it stops, also of containers that appear
later, until the subscription is withdrawn from the assignments (the client went) or its manager no longer
serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING

import aiohttp

from .. import pki
from ..api.models import LogContext, LogMessage, PublishLogsMessage, SubscriptionMessage, Task, TaskState
from ..manager.timestamps import parse_timestamp

if TYPE_CHECKING:
    from .executor import Executor, LogStream

log = logging.getLogger(__name__)

BATCH_LINES = 500
BATCH_BYTES = 1 << 20
# After a first line, wait this long (seconds) so that lines written together go out together.
BATCH_WAIT = 0.05
# How often a followed subscription looks for selected tasks whose containers have appeared (seconds).
FOLLOW_POLL = 1.0
POST_TIMEOUT = 30.0


class SubscriptionGone(Exception):
    """The manager no longer serves the subscription: its client went."""


def log_entries(chunks: Iterable[bytes], tty: bool) -> Iterator[tuple[str, bytes]]:
    """(timestamp, line) from a log read with timestamps: one chunk per line without a TTY, raw bytes with one."""
    if not tty:
        for chunk in chunks:
            stamp, _, data = chunk.partition(b" ")
            yield stamp.decode(errors="replace"), data
        return
    pending = b""
    for chunk in chunks:
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line, pending = pending[: end + 1], pending[end + 1 :]
            stamp, _, data = line.partition(b" ")
            yield stamp.decode(errors="replace"), data
    if pending:
        stamp, _, data = pending.partition(b" ")
        yield stamp.decode(errors="replace"), data


class LogPublisher:
    def __init__(self, node_id: str, executor: Executor, certs: pki.NodeCerts) -> None:
        self.node_id = node_id
        self.executor = executor
        self.certs = certs
        self._jobs: dict[str, asyncio.Task[None]] = {}
        # Subscriptions already answered in full, so a later assignment does not answer them again.
        self._answered: set[str] = set()
        self._tasks: dict[str, Task] = {}
        self._changed = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        self._retired: set[asyncio.Task[None]] = set()

    def adopt(self, certs: pki.NodeCerts) -> None:
        """Present renewed certificates from the next connection on; other roots (a root rotation) need a new client,
        the old one closes in the background."""
        old, self.certs = self.certs, certs
        if self._ssl is not None and certs.ca_pem == old.ca_pem:
            pki.load_chain(self._ssl, certs.cert_pem, certs.key_pem)
            return
        stale, self._http, self._ssl = self._http, None, None
        if stale is not None:
            closing = asyncio.get_running_loop().create_task(stale.close())
            self._retired.add(closing)
            closing.add_done_callback(self._retired.discard)

    @property
    def active(self) -> int:
        """Subscriptions this node is publishing for now."""
        return len(self._jobs)

    def update(self, subscriptions: list[SubscriptionMessage], tasks: dict[str, Task]) -> None:
        """The subscriptions and tasks of the latest assignment: start what is new, stop what was withdrawn."""
        self._tasks = tasks
        wanted = {s.ID: s for s in subscriptions}
        for sub_id in [s for s in self._jobs if s not in wanted]:
            log.info("node %s: log subscription %s withdrawn; stopping", self.node_id, sub_id)
            self._jobs.pop(sub_id).cancel()
        self._answered &= wanted.keys()
        for sub_id, sub in wanted.items():
            if sub_id in self._jobs or sub_id in self._answered:
                continue
            log.info("node %s: publishing logs for subscription %s to manager %s (follow=%s)", self.node_id, sub_id,
                     sub.Manager, sub.Options.Follow)
            job = asyncio.create_task(self._publish(sub), name=f"logs-{sub_id}")
            self._jobs[sub_id] = job
            job.add_done_callback(partial(self._ended, sub_id))
        self.poke()

    def poke(self) -> None:
        """Containers may have appeared: followed subscriptions look again now."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _ended(self, sub_id: str, job: asyncio.Task[None]) -> None:
        if self._jobs.get(sub_id) is job:
            del self._jobs[sub_id]
        if job.cancelled():
            return
        self._answered.add(sub_id)
        exc = job.exception()
        if isinstance(exc, SubscriptionGone):
            log.info("node %s: log subscription %s ended on its manager", self.node_id, sub_id)
        elif exc is not None:
            log.warning("node %s: publishing logs for subscription %s failed: %s", self.node_id, sub_id,
                        exc or type(exc).__name__)

    async def close(self) -> None:
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ------------------------------------------------------------ publish

    def _selected(self, sub: SubscriptionMessage) -> list[Task]:
        return [t for t in self._tasks.values() if sub.selects(t)]

    async def _publish(self, sub: SubscriptionMessage) -> None:
        queue: asyncio.Queue[LogMessage | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(sub, queue))
        readers: list[asyncio.Task[None]] = []
        try:
            if sub.Options.Follow:
                await self._follow(sub, queue, readers, sender)
            else:
                for task in self._selected(sub):
                    observed = await asyncio.to_thread(self.executor.observe, task.ID)
                    if observed is not None and observed.container_id:
                        readers.append(asyncio.create_task(self._read(sub, task, observed.container_id, False, queue)))
                await asyncio.gather(*readers)
                queue.put_nowait(None)
            await sender
        finally:
            for job in (*readers, sender):
                job.cancel()
            for job in (*readers, sender):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job

    async def _follow(self, sub: SubscriptionMessage, queue: asyncio.Queue[LogMessage | None],
                      readers: list[asyncio.Task[None]], sender: asyncio.Task[None]) -> None:
        looked_at: set[str] = set()
        while not sender.done():
            for task in self._selected(sub):
                if task.ID in looked_at:
                    continue
                observed = await asyncio.to_thread(self.executor.observe, task.ID)
                if observed is None or not observed.container_id or observed.state == TaskState.READY:
                    # No container yet, or not started: its log would end at once. A task that ended
                    # without one will never have one.
                    if task.Status.State.terminal:
                        looked_at.add(task.ID)
                    continue
                looked_at.add(task.ID)
                follow = observed.container_running
                readers.append(asyncio.create_task(self._read(sub, task, observed.container_id, follow, queue)))
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({sender, changed}, timeout=FOLLOW_POLL, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()

    async def _read(self, sub: SubscriptionMessage, task: Task, container_id: str, follow: bool,
                    queue: asyncio.Queue[LogMessage | None]) -> None:
        """What the container holds now, then (with ``follow``) what it writes until it stops.

        The engine's API reads one stream at a time: what it holds is read stream by stream and merged in
        the order written, so that a tail counts the lines of both, as ``docker logs`` does; each stream is
        then followed from the last line read of it on.
        """
        tty = bool(task.Spec.ContainerSpec.TTY)
        options = sub.Options
        context = LogContext(NodeID=self.node_id, ServiceID=task.ServiceID, TaskID=task.ID)
        held = await asyncio.gather(*(
            asyncio.to_thread(self._read_held, container_id, source, options.Since, options.Tail, tty)
            for source in options.Streams
        ))
        lines = sorted(((stamp, source, data) for source, entries in zip(options.Streams, held)
                        for stamp, data in entries), key=lambda line: line[0])
        if options.Tail is not None:
            lines = lines[len(lines) - options.Tail:] if options.Tail else []
        for stamp, source, data in lines:
            queue.put_nowait(LogMessage(Context=context, Timestamp=stamp, Stream=source, Data=data))
        if follow:
            await asyncio.gather(*(
                self._follow_stream(context, container_id, source, entries[-1][0] if entries else None,
                                    options.Since, tty, queue)
                for source, entries in zip(options.Streams, held)
            ))

    def _read_held(self, container_id: str, source: str, since: float | None, tail: int | None,
                   tty: bool) -> list[tuple[str, bytes]]:
        stream = self.executor.logs(container_id, source, follow=False, since=since, tail=tail)
        try:
            return list(log_entries(stream, tty))
        finally:
            stream.close()

    async def _follow_stream(self, context: LogContext, container_id: str, source: str, after: str | None,
                             since: float | None, tty: bool, queue: asyncio.Queue[LogMessage | None]) -> None:
        """Lines of one stream written after the line stamped ``after``, until the container stops."""
        if after is not None:
            # The engine takes whole microseconds at best: start a little earlier, skip what was sent.
            since = parse_timestamp(after) - 1e-6
        stream: LogStream = await asyncio.to_thread(self.executor.logs, container_id, source, follow=True,
                                                    since=since, tail=None)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def pump() -> None:
            error: BaseException | None = None
            try:
                for stamp, data in log_entries(stream, tty):
                    # Fixed-width RFC 3339 times in UTC sort as strings.
                    if after is None or stamp > after:
                        message = LogMessage(Context=context, Timestamp=stamp, Stream=source, Data=data)
                        loop.call_soon_threadsafe(queue.put_nowait, message)
            except Exception as exc:  # the engine ended the stream, or close() did
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(error))

        threading.Thread(target=pump, name=f"logs-{context.TaskID[:12]}-{source}", daemon=True).start()
        try:
            error = await finished
            if error is not None:
                log.warning("node %s: following the %s of task %s stopped: %s", self.node_id, source,
                            context.TaskID, error)
        finally:
            await asyncio.to_thread(stream.close)

    # --------------------------------------------------------------- send

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._ssl = pki.client_context(self.certs.ca_pem, self.certs.cert_pem, self.certs.key_pem)
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl),
                                               timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT, sock_connect=3))
        return self._http

    async def _send(self, sub: SubscriptionMessage, queue: asyncio.Queue[LogMessage | None]) -> None:
        url = f"https://{sub.Manager}/swarmd/logs/{sub.ID}"
        closing = False
        sent = 0
        while not closing:
            item = await queue.get()
            if item is not None and queue.empty():
                await asyncio.sleep(BATCH_WAIT)
            batch: list[LogMessage] = []
            size = 0
            while True:
                if item is None:
                    closing = True
                    break
                batch.append(item)
                size += len(item.Data)
                if len(batch) >= BATCH_LINES or size >= BATCH_BYTES or queue.empty():
                    break
                item = queue.get_nowait()
            body = PublishLogsMessage(SubscriptionID=sub.ID, Messages=batch, Close=closing)
            async with self._client().post(url, data=body.model_dump_json(exclude_none=True),
                                           headers={"Content-Type": "application/json"}) as resp:
                if resp.status == 404:
                    raise SubscriptionGone(sub.ID)
                if resp.status != 200:
                    answer = await resp.json(content_type=None)
                    raise aiohttp.ClientError(f"manager {sub.Manager} refused the lines: "
                                              f"{answer.get('message', resp.status)}")
            sent += len(batch)
        log.info("node %s: sent %d lines for log subscription %s", self.node_id, sent, sub.ID)
