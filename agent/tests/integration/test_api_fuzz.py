"""Schemathesis against a live manager over mutual TLS, from the OpenAPI document the manager serves.

Every operation of the document gets generated requests, valid ones (positive) and ones that break its schema
(negative); none may be answered with a 5xx, the agent must keep serving, and afterwards every record the swarm
stored in etcd must still parse with its model. Hypothesis runs derandomized: the same cases on every run.
"""

import asyncio
import collections
import itertools
import ssl
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode

from harness.cluster import SwarmNode, etcd_of, agent_log, form_swarm, wait_for
from swarm_agent import pki
from swarm_agent.api.models import SubscriptionMessage, Swarm
from swarm_agent.store.state import CLUSTER_KEY, LOG_SUBSCRIPTIONS, ROOT, TABLES, decode

pytestmark = pytest.mark.integration

# Operations left out, and why (each acts on the calling node itself, which here is the manager under test):
EXCLUDED = {
    "GET /swarmd/assignments",  # the caller's assignment stream: it never ends, by design
    "POST /swarmd/session",  # replaces the manager's own node description and session with the fuzzer's
    "POST /swarmd/leave",  # ends the manager's own session: its node goes down, as the protocol means it to
}
EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 10}


class _TLS(HTTPAdapter):
    """The node's own client context: the swarm CA, the manager's certificate; nodes are addressed by IP."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self.context, assert_hostname=False, **kwargs)


def manager_session(manager: SwarmNode) -> requests.Session:
    certs = pki.NodeCerts.load(manager.data_dir)
    assert certs is not None
    session = requests.Session()
    session.mount("https://", _TLS(pki.client_context(certs.ca_pem, certs.cert_pem, certs.key_pem)))
    return session


def bounded(body: Any) -> None:
    """Replica counts in the billions are valid requests the orchestrator would honour (as Docker's would) by
    writing that many tasks; the fuzz is after the API, so they are capped at a few."""
    mode = body.get("Mode") if isinstance(body, dict) else None
    for kind, field in (("Replicated", "Replicas"), ("ReplicatedJob", "MaxConcurrent"),
                        ("ReplicatedJob", "TotalCompletions")):
        part = mode.get(kind) if isinstance(mode, dict) else None
        if isinstance(part, dict) and isinstance(part.get(field), int) and part[field] > 3:
            part[field] = 3


# Kinds whose existing object the fuzzer updates at its current version. Not the node: a fuzzed spec would
# make the drained manager active again, and its engine would try to pull every made-up image.
VERSIONED = {"services", "secrets", "configs"}


def current_version(session: requests.Session, base_url: str, kind: str, ref: str) -> int:
    answer = session.get(f"{base_url}/{kind}/{ref}", timeout=30)
    return answer.json()["Version"]["Index"] if answer.status_code == 200 else 0


def existing_objects(manager: SwarmNode) -> dict[str, str]:
    """One object of each kind, by the path segment that names its kind: fuzzed requests also reach real ones."""
    manager.docker("network", "create", "--driver", "overlay", "fuzz-net")
    manager.docker("secret", "create", "fuzz-secret", "-", input="s3cret")
    manager.docker("config", "create", "fuzz-config", "-", input="key = value")
    manager.docker("service", "create", "--detach", "--name", "fuzz-web", "--network", "fuzz-net", "--secret",
                   "fuzz-secret", "--config", "fuzz-config", "--replicas", "2", "local/absent:1")
    task = wait_for("a task of fuzz-web", lambda: manager.docker(
        "service", "ps", "-q", "--no-trunc", "fuzz-web").stdout.split()[0])
    return {"services": "fuzz-web", "networks": "fuzz-net", "secrets": "fuzz-secret", "configs": "fuzz-config",
            "nodes": manager.node_id, "tasks": task}


def unreadable_records(manager: SwarmNode) -> list[str]:
    """Every record under the swarm's prefix that does not parse as the store's reader parses it."""

    async def read() -> list:
        etcd = etcd_of(manager)
        try:
            kvs, _ = await etcd.get_prefix(ROOT)
        finally:
            await etcd.close()
        return kvs

    bad = []
    for kv in asyncio.run(read()):
        model = next((m for m, prefix in TABLES.items() if kv.key.startswith(prefix)), None)
        try:
            if model is not None:
                decode(model, kv)
            elif kv.key == CLUSTER_KEY:
                decode(Swarm, kv)
            elif kv.key.startswith(LOG_SUBSCRIPTIONS):
                SubscriptionMessage.model_validate_json(kv.value)
            else:
                kv.value.decode()
        except ValueError as exc:
            bad.append(f"{kv.key}: {exc}")
    return bad


def test_fuzzed_requests_get_no_server_error_and_leave_the_store_valid(lab):
    (manager,) = form_swarm(lab.add_hosts("m1"))
    # Drained: the services the fuzzer creates stay pending, and no engine pulls made-up images.
    manager.docker("node", "update", "--availability", "drain", manager.node_id)
    existing = existing_objects(manager)
    session = manager_session(manager)
    base_url = f"https://{manager.addr}"
    served = session.get(f"{base_url}/swarmd/openapi.json", timeout=30)
    assert served.status_code == 200, served.text
    schema = schemathesis.openapi.from_dict(served.json())

    cases = 0
    answered: collections.Counter[int] = collections.Counter()  # by status class
    errors: list[str] = []
    # Removals last, so that the other operations still find the existing objects.
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda op: op.method == "DELETE")
    assert {op.label for op in operations} >= EXCLUDED
    for operation in operations:
        if operation.label in EXCLUDED:
            continue
        kind = operation.path.removeprefix("/v{api_version}").split("/")[1]
        fixed: list[dict[str, str] | None] = [None]
        # Not the log streams of real tasks: with follow, they stream until the client goes.
        if "{id}" in operation.path and kind in existing and not operation.path.endswith("/logs"):
            fixed.append({"id": existing[kind]})
        for path_parameters, (mode, examples) in itertools.product(fixed, EXAMPLES.items()):

            @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
            def run(case: schemathesis.Case) -> None:
                nonlocal cases
                bounded(case.body)
                if path_parameters and operation.path.endswith("/update") and kind in VERSIONED:
                    # The object's current version: the update is carried out, not refused as out of sequence.
                    case.query = {**(case.query or {}), "version": current_version(session, base_url, kind,
                                                                                     path_parameters["id"])}
                response = case.call(base_url=base_url, session=session, timeout=60)
                cases += 1
                answered[response.status_code // 100] += 1
                if response.status_code >= 500:
                    errors.append(f"{response.status_code} {response.text[:300]}\n  {case.as_curl_command()}")

            try:
                run()
            except Unsatisfiable:
                pass  # nothing left to break the schema with (no parameters or body to negate): positive only

    assert not errors, f"{len(errors)} server errors in {cases} cases:\n" + "\n".join(errors)
    assert cases >= 1000, cases
    assert answered[2] >= 100, answered  # not only refusals: requests the manager carried out, too
    assert manager.proc is not None and manager.proc.poll() is None, "the agent died"
    assert session.get(f"{base_url}/_ping", timeout=30).status_code == 200
    assert "Traceback" not in agent_log(manager)
    assert not unreadable_records(manager)
    print(f"{cases} generated requests, no server error; by status class: {dict(answered)}")  # shown with -s
