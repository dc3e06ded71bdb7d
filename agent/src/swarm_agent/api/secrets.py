"""``/secrets`` and ``/configs``: this cluster stores neither yet.

Listing answers the truth (there are none), so that tools which list them on the way to something else
(``docker stack rm`` removes a stack's secrets and configs) work; creating one is refused with the reason,
and a service referring to one is refused by ``services.check_supported``.
"""

from aiohttp import web

from .app import Route, agent_of, json_response
from .errors import BadRequest, NotFound
from .filters import parse_filters


def _kind(request: web.Request) -> str:
    return "config" if "/configs" in request.path else "secret"


async def list_none(request: web.Request) -> web.Response:
    agent_of(request).require_manager()
    parse_filters(request.query.get("filters"), {"id", "name", "names", "label"})
    return json_response([])


async def refuse_create(request: web.Request) -> web.Response:
    agent_of(request).require_manager()
    raise BadRequest(f"{_kind(request)}s are not supported by this cluster yet")


async def inspect_none(request: web.Request) -> web.Response:
    agent_of(request).require_manager()
    raise NotFound(f"{_kind(request)} {request.match_info['id']} not found")


ROUTES = [
    Route(method, f"/{kind}{path}", handler, "manager")
    for kind in ("secrets", "configs")
    for method, path, handler in (("GET", "", list_none), ("POST", "/create", refuse_create),
                                  ("GET", "/{id}", inspect_none), ("DELETE", "/{id}", inspect_none))
]
