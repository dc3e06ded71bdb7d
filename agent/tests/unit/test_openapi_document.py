"""The OpenAPI document: valid OpenAPI 3.1, and every route the application serves, as the handlers read it."""

import json

import pytest
import schemathesis
from aiohttp.test_utils import make_mocked_request

from swarm_agent.api.app import VERSION, Route, build_app, query_str
from swarm_agent.api.models import ServiceSpec
from swarm_agent.api.openapi import document, operation_id
from swarm_agent.node import AgentConfig, NodeAgent


@pytest.fixture(scope="module")
def routes() -> list[Route]:
    return NodeAgent(AgentConfig()).routes()


@pytest.fixture(scope="module")
def doc(routes) -> dict:
    return document(routes)


def operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): op for path, item in doc["paths"].items() for method, op in item.items()}


def test_the_document_is_valid_openapi(doc):
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.1 meta-schema
    json.dumps(doc)  # served as it is


def test_every_reference_resolves(doc):
    text = json.dumps(doc)
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs and refs <= set(doc["components"]["schemas"])


def test_the_document_lists_every_route_the_router_serves_with_its_access(routes, doc):
    app = build_app(NodeAgent(AgentConfig()), routes, local=False)
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    ops = operations(doc)
    assert set(ops) == served
    access = {(r.method, r.path): r.access for r in routes}
    for (method, path), op in ops.items():
        assert op["x-access"] == access[(method, path.removeprefix("/v{api_version}"))]
        assert op["operationId"] == operation_id(method, path)
    assert ops[("GET", "/swarmd/openapi.json")]["x-access"] == "manager"
    assert len({op["operationId"] for op in ops.values()}) == len(ops)


def test_operations_carry_their_parameters_bodies_and_docker_errors(doc):
    ops = operations(doc)
    update = ops[("POST", "/v{api_version}/services/{id}/update")]
    params = {p["name"]: p for p in update["parameters"]}
    assert set(params) == {"api_version", "id", "version", "rollback"}
    assert params["version"]["required"] and params["version"]["schema"] == VERSION.schema
    assert update["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServiceSpec"}
    spec = doc["components"]["schemas"]["ServiceSpec"]
    assert set(spec["properties"]) == {f.alias or name for name, f in ServiceSpec.model_fields.items()}
    listing = {p["name"]: p for p in ops[("GET", "/tasks")]["parameters"]}
    assert "desired-state" in listing["filters"]["content"]["application/json"]["schema"]["properties"]
    error = update["responses"]["default"]["content"]["application/json"]["schema"]
    assert doc["components"]["schemas"][error["$ref"].rsplit("/", 1)[1]]["required"] == ["message"]
    assert "requestBody" not in ops[("GET", "/services")]


def test_a_handler_reading_an_undeclared_query_parameter_is_caught():
    request = make_mocked_request("GET", "/services?colour=blue")
    request["route"] = Route("GET", "/services", lambda r: None, "manager")  # type: ignore[arg-type,return-value]
    with pytest.raises(AssertionError, match="colour"):
        query_str(request, "colour")
