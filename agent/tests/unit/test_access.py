"""Who may call a route: the certificate's role, as the swarm stands now (removals, demotions)."""

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from swarm_agent import pki
from swarm_agent.api.app import Caller, Route, _as_of_now, _check_access
from swarm_agent.api.errors import Forbidden
from swarm_agent.api.models import Node, NodeSpec
from swarm_agent.store.state import Snapshot


def _identity(node_id: str, role: str, cluster_id: str = "c1") -> pki.Identity:
    now = datetime.now(timezone.utc)
    return pki.Identity(node_id=node_id, role=role, cluster_id=cluster_id, not_before=now, not_after=now, serial=7)


def _agent(state: Snapshot) -> SimpleNamespace:
    return SimpleNamespace(cluster_id="c1", manager=SimpleNamespace(cache=SimpleNamespace(state=state)))


async def _handler(request):  # pragma: no cover - never called
    raise AssertionError


def _route(access: str) -> Route:
    return Route("GET", "/x", _handler, access)  # type: ignore[arg-type]


def test_another_swarms_certificate_is_refused() -> None:
    with pytest.raises(Forbidden, match="another swarm"):
        _as_of_now(_agent(Snapshot()), _identity("n1", "manager", cluster_id="c2"))


def test_a_removed_nodes_certificate_is_refused() -> None:
    state = Snapshot(removed={"n1"})
    with pytest.raises(Forbidden, match="node n1 was removed"):
        _as_of_now(_agent(state), _identity("n1", "worker"))
    assert _as_of_now(_agent(state), _identity("n2", "worker")).node_id == "n2"


def test_a_demoted_managers_certificate_has_a_workers_rights() -> None:
    state = Snapshot(nodes={"n1": Node(ID="n1", Spec=NodeSpec(Role="worker"))})
    caller = Caller(local=False, identity=_as_of_now(_agent(state), _identity("n1", "manager")))
    assert caller.role == "worker"
    with pytest.raises(Forbidden, match="a worker certificate may not call"):
        _check_access(_route("manager"), caller)
    _check_access(_route("node"), caller)


def test_a_promoted_workers_certificate_stays_a_workers_until_renewed() -> None:
    state = Snapshot(nodes={"n1": Node(ID="n1", Spec=NodeSpec(Role="manager"))})
    assert _as_of_now(_agent(state), _identity("n1", "worker")).role == "worker"


def test_a_manager_unknown_to_the_cache_yet_keeps_its_role() -> None:
    # A node that joined a moment ago may not be in this manager's cache yet; its certificate is fresh.
    assert _as_of_now(_agent(Snapshot()), _identity("n1", "manager")).role == "manager"


@pytest.mark.parametrize(
    ("role", "access", "allowed"),
    [
        ("anonymous", "public", True), ("anonymous", "node", False), ("worker", "node", True),
        ("worker", "manager", False), ("manager", "manager", True), ("manager", "local", False),
        ("local", "local", True),
    ],
)
def test_roles_against_access_levels(role: str, access: str, allowed: bool) -> None:
    if role == "local":
        caller = Caller(local=True, identity=None)
    else:
        caller = Caller(local=False, identity=None if role == "anonymous" else _identity("n1", role))
    if allowed:
        _check_access(_route(access), caller)
    else:
        with pytest.raises(Forbidden):
            _check_access(_route(access), caller)
