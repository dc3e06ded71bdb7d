"""The API's OpenAPI 3.1 document, generated from the routes the application serves.

Each route declares its access, request body type and query parameters (``Route`` in ``api/app.py``) and its
handler reads them from there, so the document describes what the server does rather than a copy kept beside
it. Request body schemas are the pydantic models' own JSON schemas; every error is Docker's
``{"message": ...}``.

Served on ``GET /swarmd/openapi.json`` to manager certificates (and the unix socket): it describes the Docker
API, which only managers may call; a worker's agent speaks the ``/swarmd/`` protocol it was built with and
needs no document to do so.
"""

import re
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from .. import __version__
from .app import API_VERSION, Route, json_response, served_paths

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
ERROR = "ErrorResponse"
CERTIFICATE = "nodeCertificate"

_WHO = {
    "public": "anybody who completes TLS",
    "node": "any node certificate of this swarm",
    "manager": "a manager certificate, or the unix socket",
    "local": "the unix socket only",
}


def operation_id(method: str, path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", f"{method} {path}".lower()).strip("_")


def _parameters(route: Route, path: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"\{(\w+)\}", path):
        schema = ({"type": "string", "pattern": r"^[0-9]+\.[0-9]+$", "examples": [API_VERSION]}
                  if name == "api_version" else {"type": "string", "minLength": 1})
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    for query in route.query:
        param: dict[str, Any] = {"name": query.name, "in": "query", "required": query.required}
        if query.description:
            param["description"] = query.description
        if query.json:
            param["content"] = {"application/json": {"schema": query.schema}}
        else:
            param["schema"] = query.schema
        params.append(param)
    return params


def _operation(route: Route, path: str, body_refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    doc = (route.handler.__doc__ or "").strip().splitlines()
    op: dict[str, Any] = {
        "operationId": operation_id(route.method, path),
        "summary": doc[0] if doc else route.handler.__name__.replace("_", " "),
        "description": f"Access: {route.access} ({_WHO[route.access]}).",
        "x-access": route.access,
        "security": [] if route.access == "public" else [{CERTIFICATE: []}],
        "parameters": _parameters(route, path),
        "responses": {
            "2XX": {"description": "done"},
            "default": {
                "description": "Docker's error body",
                "content": {"application/json": {"schema": {"$ref": REF.format(model=ERROR)}}},
            },
        },
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_refs[route.body]}}}
    return op


def document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` as ``build_app`` serves them."""
    bodies = list(dict.fromkeys(r.body for r in routes if r.body is not None))
    refs, defs = TypeAdapter.json_schemas(
        [(body, "validation", TypeAdapter(body)) for body in bodies], ref_template=REF
    )
    body_refs = {body: refs[(body, "validation")] for body in bodies}
    schemas = dict(defs.get("$defs", {}))
    schemas[ERROR] = {
        "type": "object",
        "properties": {"message": {"type": "string"}},
        "required": ["message"],
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for path in served_paths(route):
            paths.setdefault(path, {})[route.method.lower()] = _operation(route, path, body_refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "swarmd",
            "version": __version__,
            "description": f"The swarm routes of the Docker Engine API {API_VERSION}, and the agents' own "
                           "(/swarmd/). Mutual TLS on TCP 2377; the unix socket has every right.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                CERTIFICATE: {"type": "mutualTLS", "description": "a node certificate issued by the swarm's CA"},
            },
        },
    }


async def serve(request: web.Request) -> web.Response:
    return json_response(document(request.app["routes"]))


ROUTES = [Route("GET", "/swarmd/openapi.json", serve, "manager")]
