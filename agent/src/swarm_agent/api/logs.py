"""``GET /services/{id}/logs`` and ``GET /tasks/{id}/logs``: the tasks' output, from whichever nodes run them.

The answer is Docker's log stream: each line in a frame with an 8-byte header (stream 1 stdout, 2 stderr,
3 an error of the daemon's; three zero bytes; the length, big-endian) unless the tasks have a TTY, then
raw. With ``details`` each line starts with its context, ``com.docker.swarm.node.id=N,com.docker.swarm.
service.id=S,com.docker.swarm.task.id=T`` and a space, which the docker CLI (it always asks for details)
turns into its ``NAME.SLOT.TASK@NODE |`` prefix; with ``timestamps`` the engine's time of the line comes
first. The manager gathers the lines through its log broker (``manager/logbroker.py``).
"""

import logging
import struct
from urllib.parse import quote_plus

from aiohttp import web

from .app import Query, Route, agent_of, flag, query_bool, query_str
from .errors import BadRequest
from .models import LogMessage, LogSelector, LogSubscriptionOptions
from .services import find_service
from .tasks import find_task

log = logging.getLogger(__name__)

# What the Engine answers log requests with up to API 1.41, multiplexed or not.
RAW_STREAM = "application/vnd.docker.raw-stream"
_STREAM_IDS = {"stdout": 1, "stderr": 2}
SYSTEM_ERR = 3


def frame(stream_id: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream_id, len(data)) + data


def details_of(msg: LogMessage) -> bytes:
    """The context as the Engine writes details: ``key=value`` pairs, query-escaped, sorted, comma-separated."""
    attrs = {
        "com.docker.swarm.node.id": msg.Context.NodeID,
        "com.docker.swarm.service.id": msg.Context.ServiceID,
        "com.docker.swarm.task.id": msg.Context.TaskID,
    }
    return ",".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(attrs.items())).encode()


def render(msg: LogMessage, *, timestamps: bool, details: bool) -> bytes:
    line = msg.Data
    if details:
        line = details_of(msg) + b" " + line
    if timestamps:
        line = msg.Timestamp.encode() + b" " + line
    return line


def parse_options(request: web.Request) -> LogSubscriptionOptions:
    streams = [name for name in ("stdout", "stderr") if query_bool(request, name)]
    if not streams:
        raise BadRequest("Bad parameters: you must choose at least one stream")
    raw_tail = query_str(request, "tail", "all")
    tail: int | None = None
    if raw_tail not in ("", "all"):
        try:
            tail = int(raw_tail)
        except ValueError:
            raise BadRequest(f'invalid value for query parameter tail: {raw_tail!r} (want a positive integer or "all")') from None
        if tail < 0:
            raise BadRequest(f"invalid value for query parameter tail: {tail} (negative tail values are not supported)")
    raw_since = query_str(request, "since")
    since: float | None = None
    if raw_since:
        try:
            since = float(raw_since)
        except ValueError:
            raise BadRequest(f"invalid value for query parameter since: {raw_since!r} "
                             "(want a UNIX time in seconds, such as 1700000000.000000000)") from None
    return LogSubscriptionOptions(Streams=streams, Follow=query_bool(request, "follow"), Tail=tail,
                                  Since=since if since else None)


async def _stream(request: web.Request, selector: LogSelector, tty: bool) -> web.StreamResponse:
    mgr = agent_of(request).require_manager()
    # Everything is checked before the 200 goes out: after it, an error can only be written into the stream.
    options = parse_options(request)
    timestamps, details = query_bool(request, "timestamps"), query_bool(request, "details")

    def client_gone() -> bool:
        return request.transport is None or request.transport.is_closing()

    async with mgr.logs.subscribe(selector, options) as sub:
        response = web.StreamResponse(headers={"Content-Type": RAW_STREAM})
        await response.prepare(request)
        lines = 0
        try:
            async for batch in sub.batches(client_gone):
                out = [render(m, timestamps=timestamps, details=details) for m in batch]
                if not tty:
                    out = [frame(_STREAM_IDS[m.Stream], line) for m, line in zip(batch, out)]
                if out:
                    await response.write(b"".join(out))
                    lines += len(out)
            warning = sub.incomplete()
            if warning is not None:
                text = f"Error grabbing logs: {warning}\n".encode()
                await response.write(text if tty else frame(SYSTEM_ERR, text))
        except ConnectionError:
            log.info("log subscription %s: the client went away", sub.message.ID)
        log.info("log subscription %s: %d lines sent to the client", sub.message.ID, lines)
    return response


async def service_logs(request: web.Request) -> web.StreamResponse:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    service = find_service(mgr.cache.state.services, request.match_info["id"])
    return await _stream(request, LogSelector(ServiceIDs=[service.ID]), bool(service.Spec.TaskTemplate.ContainerSpec.TTY))


async def task_logs(request: web.Request) -> web.StreamResponse:
    mgr = agent_of(request).require_manager()
    await mgr.cache.barrier()
    task = find_task(mgr.cache.state.tasks, request.match_info["id"])
    return await _stream(request, LogSelector(TaskIDs=[task.ID]), bool(task.Spec.ContainerSpec.TTY))


QUERY = (
    flag("stdout"), flag("stderr"), flag("follow", "keep streaming new lines"), flag("timestamps"),
    flag("details", "start each line with its node, service and task"),
    Query("tail", {"type": "string", "pattern": "^(all|[0-9]+)?$"}, description="the last N lines, or all"),
    Query("since", {"type": "string"}, description="only lines after this UNIX time (seconds, fraction allowed)"),
)

ROUTES = [
    Route("GET", "/services/{id}/logs", service_logs, "manager", query=QUERY),
    Route("GET", "/tasks/{id}/logs", task_logs, "manager", query=QUERY),
]
