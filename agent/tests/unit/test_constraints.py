import pytest
from cluster_sim import make_node
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_agent.api.models import Node, NodeDescription, EngineDescription
from swarm_agent.manager.constraints import node_attribute, parse_constraint, parse_constraints


@pytest.mark.parametrize(
    "expr, key, equal, value",
    [
        ("node.labels.disk==ssd", "node.labels.disk", True, "ssd"),
        ("node.role != manager", "node.role", False, "manager"),
        ("  node.hostname ==  host-1 ", "node.hostname", True, "host-1"),
        ("engine.labels.zone!=eu-1", "engine.labels.zone", False, "eu-1"),
        ("node.platform.arch==x86_64", "node.platform.arch", True, "x86_64"),
        ("node.id==abc", "node.id", True, "abc"),
    ],
)
def test_parse(expr: str, key: str, equal: bool, value: str) -> None:
    constraint = parse_constraint(expr)
    assert (constraint.key, constraint.equal, constraint.value) == (key, equal, value)


@pytest.mark.parametrize(
    "expr, message",
    [
        ("node.labels.disk", "no operator"),
        ("node.labels.disk=ssd", "no operator"),
        ("node.labels.==ssd", "unknown key"),
        ("node.colour==red", "unknown key"),
        ("1node.role==worker", "invalid key"),
        ("node.role==", "invalid value"),
        ("node.role==a==b", "invalid value"),
    ],
)
def test_parse_rejects(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_constraint(expr)


def test_matching_is_case_insensitive_and_missing_label_reads_empty() -> None:
    node = make_node("n1", labels={"disk": "SSD"}, role="manager", arch="x86_64", os="Linux")
    assert parse_constraint("node.labels.disk==ssd").matches(node)
    assert not parse_constraint("node.labels.disk!=ssd").matches(node)
    assert parse_constraint("node.labels.rack!=a").matches(node)  # missing label is "" which is not "a"
    assert not parse_constraint("node.labels.rack==a").matches(node)
    assert parse_constraint("node.role==MANAGER").matches(node)
    assert parse_constraint("node.platform.os==linux").matches(node)
    assert parse_constraint("node.id==N1").matches(node)
    assert parse_constraint("node.hostname==host-n1").matches(node)


def test_engine_labels_and_attributes() -> None:
    node = Node(ID="x", Description=NodeDescription(Engine=EngineDescription(Labels={"zone": "eu"})))
    assert node_attribute(node, "engine.labels.zone") == "eu"
    assert node_attribute(node, "engine.labels.other") == ""
    assert node_attribute(node, "node.labels.zone") == ""
    assert parse_constraint("engine.labels.zone==EU").matches(node)


def test_constraints_are_anded_through_parse_constraints() -> None:
    node = make_node("n1", labels={"disk": "ssd", "rack": "a"})
    constraints = parse_constraints(["node.labels.disk==ssd", "node.labels.rack==b"])
    assert [c.matches(node) for c in constraints] == [True, False]
    assert parse_constraints(None) == []


label_values = st.text(alphabet="abcXYZ09-", min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(have=st.one_of(st.none(), label_values), want=label_values)
def test_equal_and_not_equal_are_complements(have: str | None, want: str) -> None:
    node = make_node("n1", labels={} if have is None else {"k": have})
    equal = parse_constraint(f"node.labels.k=={want}").matches(node)
    assert equal != parse_constraint(f"node.labels.k!={want}").matches(node)
    assert equal == (have is not None and have.lower() == want.lower())
