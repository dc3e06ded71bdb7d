"""The HTTP application: Docker's routes (plain and ``/v1.NN/``-prefixed), who may call them, and Docker's error bodies.

Two listeners serve the same routes: the node's root-only unix socket (the
operator, with every right) and TCP 2377 with mutual TLS, where the caller is
the node named in its client certificate and gets only what its role allows.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import pki
from ..store.etcd import EtcdError
from .errors import ApiError, BadRequest, Forbidden, describe_validation

if TYPE_CHECKING:
    from ..node import NodeAgent

log = logging.getLogger(__name__)

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"

Access = Literal["public", "node", "manager", "local"]
"""public: anybody who completes TLS (fetching the CA, joining with a token);
node: any node certificate of this cluster; manager: a manager certificate;
local: the unix socket only (init, join, leave act on this node itself)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Query:
    """A query parameter a handler reads; ``schema`` is the JSON schema of its value."""

    name: str
    schema: dict[str, Any]
    required: bool = False
    description: str = ""
    json: bool = False  # the value is a JSON document (Docker's ``filters``)


@dataclass(frozen=True)
class Route:
    """One route, and what it reads: the handlers take their body and query parameters from here
    (``read_body``, ``query_*``), so the OpenAPI document (``api/openapi.py``) cannot drift from them."""

    method: str
    path: str
    handler: Handler
    access: Access
    body: Any = None  # the type the request body must parse as (a pydantic model); None: no body is read
    query: tuple[Query, ...] = ()


def flag(name: str, description: str = "") -> Query:
    """A boolean query parameter as Docker reads it (``1``/``true``/``yes`` or ``0``/``false``/``no``)."""
    return Query(name, {"type": "boolean"}, description=description)


MAX_VERSION = 2**63 - 1
VERSION = Query("version", {"type": "integer", "minimum": 0, "maximum": MAX_VERSION}, required=True,
                description="the Version.Index the update is based on (optimistic concurrency)")


def filter_query(names: set[str]) -> Query:
    """Docker's ``filters``: a JSON object of filter name to a list of values (or an object of value to true)."""
    values = {"oneOf": [{"type": "array", "items": {"type": "string"}},
                        {"type": "object", "additionalProperties": {"type": "boolean"}}]}
    schema = {"type": "object", "properties": {n: values for n in names}, "additionalProperties": False}
    return Query("filters", schema, description=f"filters: {', '.join(sorted(names))}", json=True)


@dataclass(frozen=True)
class Caller:
    local: bool
    identity: pki.Identity | None

    @property
    def role(self) -> str:
        if self.local:
            return "local"
        return self.identity.role if self.identity else "anonymous"


def agent_of(request: web.Request) -> "NodeAgent":
    return request.app["agent"]


def caller_of(request: web.Request) -> Caller:
    return request["caller"]


def json_response(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", no charset: the docker CLI only decodes error bodies with that header.
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


async def read_body(request: web.Request, what: str) -> Any:
    """Parse the request body as the route's ``body`` type; a bad body is a 400 that names the field."""
    model: type[BaseModel] | None = request["route"].body
    assert model is not None, f"{request.method} {request.path} reads a body without declaring it"
    raw = await request.read()
    if not raw.strip():
        raise BadRequest(f"invalid {what}: the request body is empty")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequest(f"invalid {what}: the request body is not valid JSON") from exc
        raise BadRequest(f"invalid {what}: {describe_validation(exc)}") from exc


def query_str(request: web.Request, name: str, default: str = "") -> str:
    """A query parameter the route declares (an undeclared one is a bug of the route, not of the caller)."""
    route = request.get("route")
    assert route is None or any(q.name == name for q in route.query), (
        f"{route.method} {route.path} reads query parameter {name!r} without declaring it")
    return request.query.get(name, default)


def query_bool(request: web.Request, name: str) -> bool:
    value = query_str(request, name).lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise BadRequest(f"invalid value for query parameter {name}: {value!r} (want true or false)")


def query_version(request: web.Request) -> int:
    raw = query_str(request, "version") or None
    if raw is None:
        raise BadRequest("missing version: pass the Version.Index you read as ?version=N")
    try:
        version = int(raw)
    except ValueError:
        raise BadRequest(f"invalid version {raw!r}: want an integer") from None
    # The store compares it with etcd's revisions, which are int64: a larger one would fail there, not here.
    if not 0 <= version <= MAX_VERSION:
        raise BadRequest(f"invalid version {raw!r}: want an integer from 0 to {MAX_VERSION}")
    return version


_ACCESS_RANK = {"anonymous": 0, "worker": 1, "manager": 2, "local": 3}
_NEEDED_RANK = {"public": 0, "node": 1, "manager": 2, "local": 3}


def _check_access(route: Route, caller: Caller) -> None:
    if _ACCESS_RANK[caller.role] >= _NEEDED_RANK[route.access]:
        return
    if caller.role == "anonymous":
        raise Forbidden("a client certificate from this swarm is required")
    raise Forbidden(f"a {caller.role} certificate may not call {route.method} {route.path}")


def _as_of_now(agent: "NodeAgent", identity: pki.Identity) -> pki.Identity:
    """The caller's identity as the swarm stands now, not as when its certificate was issued.

    A certificate stays cryptographically valid until it expires, so what
    happened since is checked here, on every route, against the manager's
    cache of the store: a removed node is refused, and a demoted manager
    keeps only a worker's rights until it renews.
    """
    if identity.cluster_id != agent.cluster_id:
        raise Forbidden("the client certificate belongs to another swarm")
    if agent.manager is None:
        return identity
    state = agent.manager.cache.state
    if identity.node_id in state.removed:
        raise Forbidden(
            f"node {identity.node_id} was removed from the swarm: its certificate is no longer accepted; "
            "leave and join again with a token"
        )
    node = state.nodes.get(identity.node_id)
    if identity.role == "manager" and node is not None and node.Spec.Role != "manager":
        return replace(identity, role="worker")
    return identity


def _make_endpoint(route: Route) -> Handler:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        request["route"] = route
        caller = caller_of(request)
        if caller.identity is not None:
            caller = Caller(local=False, identity=_as_of_now(agent_of(request), caller.identity))
            request["caller"] = caller
        _check_access(route, caller)
        return await route.handler(request)

    return endpoint


@web.middleware
async def _docker_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            log.warning("%s %s failed: %s", request.method, request.path, exc.message)
        return json_response({"message": exc.message}, status=exc.status)
    except EtcdError as exc:
        log.warning("%s %s: cluster store error: %s", request.method, request.path, exc)
        return json_response({"message": f"the cluster store is unavailable: {exc}"}, status=503)
    except web.HTTPException as exc:
        if exc.status == 404:
            return json_response({"message": "page not found"}, status=404)
        if exc.status == 405:
            return json_response({"message": f"method {request.method} not allowed on {request.path}"}, 405)
        raise
    except Exception:
        log.exception("%s %s crashed", request.method, request.path)
        return json_response({"message": "internal error; see the agent's log"}, status=500)


def _identify(local: bool) -> Callable[..., Any]:
    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        identity = None
        if not local:
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            try:
                identity = pki.peer_identity(ssl_object) if ssl_object is not None else None
            except ValueError:
                # Verified by our CA but not a node certificate: treated as no certificate.
                identity = None
        request["caller"] = Caller(local=local, identity=identity)
        response = await handler(request)
        response.headers.setdefault("Api-Version", API_VERSION)
        response.headers.setdefault("Server", "swarmd")
        return response

    return identify


def served_paths(route: Route) -> list[str]:
    """The paths a route is served on: its own, and (Docker's, not the agents' ``/swarmd/``) ``/v1.NN/``-prefixed."""
    return [route.path] if route.path.startswith("/swarmd/") else [route.path, "/v{api_version}" + route.path]


def build_app(agent: "NodeAgent", routes: list[Route], *, local: bool) -> web.Application:
    app = web.Application(middlewares=[_identify(local), _docker_errors], client_max_size=64 * 1024 * 1024)
    app["agent"] = agent
    app["routes"] = routes  # what api/openapi.py describes
    for route in routes:
        endpoint = _make_endpoint(route)
        for path in served_paths(route):
            app.router.add_route(route.method, path, endpoint)
    return app
