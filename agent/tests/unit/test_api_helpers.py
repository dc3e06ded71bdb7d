"""Docker's filters, object lookup rules and query parameters."""

import pytest
from aiohttp.test_utils import make_mocked_request

from swarm_agent.api.app import query_version
from swarm_agent.api.errors import BadRequest, NotFound
from swarm_agent.api.filters import match_label, parse_filters
from swarm_agent.api.lookup import resolve
from swarm_agent.manager.dispatcher import HeartbeatBody


def test_filters_accept_both_docker_forms():
    assert parse_filters('{"name": {"web": true, "db": false}}', {"name"}) == {"name": ["web"]}
    assert parse_filters('{"name": ["web", "db"]}', {"name"}) == {"name": ["web", "db"]}
    assert parse_filters(None, {"name"}) == {}


@pytest.mark.parametrize("raw,words", [("{x", "not JSON"), ("[1]", "object"), ('{"colour": ["x"]}', "'colour'"),
                                       ('{"name": 3}', "'name'")])
def test_bad_filters_say_what_is_wrong(raw, words):
    with pytest.raises(BadRequest, match=words):
        parse_filters(raw, {"name"})


def test_label_filters():
    labels = {"team": "a", "tier": "web"}
    assert match_label(labels, ["team"]) and match_label(labels, ["team=a", "tier=web"])
    assert not match_label(labels, ["team=b"]) and not match_label(labels, ["owner"])


ITEMS = [("abc123", "web"), ("abd456", "db"), ("xyz789", "abc")]


def find(ref: str) -> tuple[str, str]:
    return resolve("service", ref, ITEMS, lambda i: i[0], lambda i: [i[1]])


def test_lookup_order_is_id_then_name_then_unique_prefix():
    assert find("abc123") == ITEMS[0]
    assert find("abc") == ITEMS[2]  # a name beats an ID prefix
    assert find("abd") == ITEMS[1]
    with pytest.raises(NotFound, match="ambiguous"):
        find("ab")
    with pytest.raises(NotFound, match="service nope not found"):
        find("nope")


# Found by the fuzzer (test_api_fuzz.py): a version beyond int64 was a 503 "the cluster store is unavailable".
@pytest.mark.parametrize("raw", ["-1", str(2**63), "-7210323159172524260982784"])
def test_a_version_outside_etcds_revisions_is_a_bad_request(raw):
    request = make_mocked_request("POST", f"/swarm/update?version={raw}")
    with pytest.raises(BadRequest, match="invalid version .* want an integer from 0 to"):
        query_version(request)


# Session IDs are positive int64s, as the agent makes them.
@pytest.mark.parametrize("session", [0, -5, 2**63])
def test_a_heartbeat_for_a_session_id_out_of_range_is_refused(session):
    with pytest.raises(ValueError, match="session"):
        HeartbeatBody.model_validate({"session": session})
