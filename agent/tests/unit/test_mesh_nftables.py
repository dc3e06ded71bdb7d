"""The nftables mesh's pure part: rendering a MeshState, diffing two, and the text of the transactions."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_agent.net.mesh.model import (
    Backend,
    Frontend,
    MeshService,
    MeshState,
    mesh_state,
)
from swarm_agent.net.mesh.nftables import (
    MeshConflict,
    NftablesMesh,
    TableContent,
    diff_script,
    diff_tables,
    full_script,
    parse_listing,
    render_state,
)

WEB = MeshService("web", vips=("10.9.0.2",), published=(Frontend("tcp", 8080, 80),),
                  vip_ports=(Frontend("tcp", 80, 80),),
                  backends=(Backend("10.0.1.4"), Backend("10.0.1.2"), Backend("10.0.1.3")))
DNS = MeshService("dns", vips=("10.9.0.3",), vip_ports=(Frontend("udp", 53, 5353),), backends=())


def test_render_of_a_state() -> None:
    text = full_script(render_state(mesh_state(WEB, DNS)), ("br0",))
    # One atomic replacement of our table, and only of it.
    assert text.splitlines()[:3] == ["table ip swarm_mesh {}", "delete table ip swarm_mesh", "table ip swarm_mesh {"]
    assert "elements = { 10.9.0.2 . tcp . 80 : goto svc_web_tcp_80, 10.9.0.3 . udp . 53 : goto svc_dns_udp_5353 }" \
        in text
    assert "elements = { tcp . 8080 : goto svc_web_tcp_80 }" in text
    assert 'elements = { "br0" }' in text
    assert "type nat hook output priority -100;" in text
    assert "type nat hook prerouting priority -100;" in text
    assert "type nat hook postrouting priority 100;" in text
    assert "fib daddr type local meta l4proto . th dport vmap @published_services" in text
    # Backends sorted by address, whatever order they came in.
    assert ("meta l4proto tcp dnat to numgen random mod 3 map { 0 : 10.0.1.2, 1 : 10.0.1.3, 2 : 10.0.1.4 } : 80"
            in text)
    # No backend: refuse at once rather than black-hole.
    assert re.search(r"chain svc_dns_udp_5353 \{\n\t\tmeta l4proto udp reject with icmp type port-unreachable "
                     r'comment "swarm:[0-9a-f]{16}"\n\t\}', text)


def test_no_backend_tcp_resets_and_single_backend_needs_no_numgen() -> None:
    empty = render_state(mesh_state(MeshService("a", published=(Frontend("tcp", 81, 80),))))
    assert empty.chains["svc_a_tcp_80"].rules == ("meta l4proto tcp reject with tcp reset",)
    one = render_state(mesh_state(MeshService("a", published=(Frontend("tcp", 81, 80),),
                                              backends=(Backend("10.0.0.5"),))))
    assert one.chains["svc_a_tcp_80"].rules[-1] == "meta l4proto tcp dnat to 10.0.0.5:80"


def test_two_services_on_one_published_port_conflict() -> None:
    other = MeshService("other", published=(Frontend("tcp", 8080, 8080),))
    with pytest.raises(MeshConflict, match="8080"):
        render_state(mesh_state(WEB, other))


def test_model_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        MeshService("bad;id")
    with pytest.raises(ValueError):
        Backend("10.0.0.300")
    with pytest.raises(ValueError):
        Frontend("sctp", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Frontend("tcp", 0, 1)
    with pytest.raises(ValueError):
        mesh_state(WEB, WEB)


def _chains_named(script: str) -> set[str]:
    return set(re.findall(r"svc_[A-Za-z0-9_]+?_(?:tcp|udp)_\d+", script))


def test_diff_touches_only_changed_services() -> None:
    services = [MeshService(f"s{i}", vips=(f"10.9.1.{i}",), published=(Frontend("tcp", 30000 + i, 80),),
                            vip_ports=(Frontend("tcp", 80, 80),), backends=(Backend(f"10.0.2.{i}"),))
                for i in range(1, 20)]
    before = render_state(mesh_state(*services))
    changed = MeshService("s7", vips=("10.9.1.7",), published=(Frontend("tcp", 30007, 80),),
                          vip_ports=(Frontend("tcp", 80, 80),), backends=(Backend("10.0.2.7"), Backend("10.0.3.7")))
    added = MeshService("new", vips=("10.9.2.1",), vip_ports=(Frontend("udp", 53, 53),), backends=())
    after_services = [changed if s.service_id == "s7" else s for s in services if s.service_id != "s3"] + [added]
    after = render_state(mesh_state(*after_services))
    diff = diff_tables(before.content, after)
    script = diff_script(diff)
    assert _chains_named(script) == {"svc_s7_tcp_80", "svc_s3_tcp_80", "svc_new_udp_53"}
    assert "flush chain ip swarm_mesh svc_s7_tcp_80" in script
    assert "add chain ip swarm_mesh svc_new_udp_53" in script
    assert "delete chain ip swarm_mesh svc_s3_tcp_80" in script
    # A backend change rewrites the chain only; the map entries leading to it stay.
    assert "10.9.1.7" not in script and "30007" not in script
    assert "delete element ip swarm_mesh vip_services { 10.9.1.3 . tcp . 80 }" in script
    assert "delete element ip swarm_mesh published_services { tcp . 30003 }" in script
    # Elements go before the chain they lead to is deleted, and new chains exist before elements lead to them.
    assert script.index("delete element ip swarm_mesh vip_services") < script.index("delete chain")
    assert script.index("add chain ip swarm_mesh svc_new_udp_53") < script.index("add element")
    assert diff_tables(after.content, after).empty


def test_identical_states_give_an_empty_diff() -> None:
    assert diff_tables(render_state(mesh_state(WEB, DNS)).content, render_state(mesh_state(DNS, WEB))).empty


def test_parse_listing_reads_digests_and_elements() -> None:
    table = render_state(mesh_state(WEB, DNS))
    web = table.chains["svc_web_tcp_80"]
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "ip", "name": "swarm_mesh", "handle": 9}},
        {"map": {"family": "ip", "name": "vip_services", "table": "swarm_mesh", "map": "verdict",
                 "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 1,
                 "elem": [[{"concat": ["10.9.0.2", "tcp", 80]}, {"goto": {"target": "svc_web_tcp_80"}}],
                          [{"concat": ["10.9.0.3", "udp", 53]}, {"goto": {"target": "svc_dns_udp_5353"}}]]}},
        {"map": {"family": "ip", "name": "published_services", "table": "swarm_mesh", "map": "verdict",
                 "type": ["inet_proto", "inet_service"], "handle": 2,
                 "elem": [[{"concat": ["tcp", 8080]}, {"goto": {"target": "svc_web_tcp_80"}}]]}},
        {"set": {"family": "ip", "name": "local_backend_ifaces", "table": "swarm_mesh", "type": "ifname"}},
        {"chain": {"family": "ip", "table": "swarm_mesh", "name": "prerouting", "type": "nat",
                   "hook": "prerouting", "prio": -100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "swarm_mesh", "name": "output", "type": "nat",
                   "hook": "output", "prio": -100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "swarm_mesh", "name": "postrouting", "type": "nat",
                   "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "swarm_mesh", "name": "svc_web_tcp_80"}},
        {"chain": {"family": "ip", "table": "swarm_mesh", "name": "svc_dns_udp_5353"}},
        {"rule": {"family": "ip", "table": "swarm_mesh", "chain": "svc_web_tcp_80", "comment": f"swarm:{web.digest}",
                  "expr": []}},
        {"rule": {"family": "ip", "table": "swarm_mesh", "chain": "svc_dns_udp_5353",
                  "comment": "swarm:0000000000000000", "expr": []}},
    ]}
    content, layout_ok = parse_listing(listing)
    assert layout_ok
    assert content.vip == table.vip and content.published == table.published
    assert content.chains == {"svc_web_tcp_80": web.digest, "svc_dns_udp_5353": "0000000000000000"}
    # The chain whose digest differs is rewritten; the one that matches is left alone.
    assert set(diff_tables(content, table).write_chains) == {"svc_dns_udp_5353"}
    listing["nftables"][3]["map"]["type"] = ["ipv4_addr", "inet_service"]
    assert parse_listing(listing)[1] is False


def test_apply_without_a_previous_apply_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    scripts: list[str] = []
    mesh = NftablesMesh()
    monkeypatch.setattr(mesh, "_commit", lambda script, what: scripts.append(script))
    mesh.apply(mesh_state(WEB))
    mesh.apply(mesh_state(WEB))
    mesh.apply(mesh_state(WEB, DNS))
    assert len(scripts) == 2
    assert scripts[0].startswith("table ip swarm_mesh {}\ndelete table ip swarm_mesh\n")
    assert _chains_named(scripts[1]) == {"svc_dns_udp_5353"}


# Hypothesis: any sequence of states, applied incrementally, ends where a full render of the last state is.
_IDS = ["a", "b", "c", "d", "e"]
_frontends = st.builds(Frontend, st.sampled_from(["tcp", "udp"]), st.integers(1, 6), st.integers(1, 4))
_backends = st.lists(st.builds(Backend, st.sampled_from([f"10.0.0.{i}" for i in range(1, 8)])), max_size=5)


@st.composite
def _states(draw: st.DrawFn) -> MeshState:
    services = []
    used_published: set[tuple[str, int]] = set()
    for number, sid in enumerate(draw(st.lists(st.sampled_from(_IDS), unique=True, max_size=5))):
        published = tuple({(f.proto, f.port): f for f in draw(st.lists(_frontends, max_size=2))
                           if (f.proto, f.port) not in used_published}.values())
        used_published.update((f.proto, f.port) for f in published)
        vip_ports = tuple({(f.proto, f.port): f for f in draw(st.lists(_frontends, max_size=2))}.values())
        # Each service has its own VIPs (as the allocator guarantees), and may have none or two.
        vips = tuple(f"10.9.{number}.{i}" for i in range(draw(st.integers(0, 2))))
        services.append(MeshService(sid, vips, published, vip_ports, tuple(draw(_backends))))
    return mesh_state(*services)


@given(st.lists(_states(), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_incremental_sequence_ends_as_a_full_render(states: list[MeshState]) -> None:
    applied = TableContent()
    previous: MeshState = {}
    for state in states:
        desired = render_state(state)
        diff = diff_tables(applied, desired)
        script = diff_script(diff)
        applied = applied.after(diff)
        assert applied == desired.content
        # The transaction names only chains of services that changed.
        changed = {sid for sid in previous.keys() | state.keys() if previous.get(sid) != state.get(sid)}
        assert {name.split("_")[1] for name in _chains_named(script)} <= changed
        previous = state
