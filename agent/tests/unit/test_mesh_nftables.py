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
    published_chain_name,
    render_state,
    vip_chain_name,
)

WEB = MeshService("web", vips=("10.9.0.2",), published=(Frontend("tcp", 8080, 80),),
                  backends=(Backend("10.0.1.4"), Backend("10.0.1.2"), Backend("10.0.1.3")))
DNS = MeshService("dns", vips=("10.9.0.3",), backends=())


def test_render_of_a_state() -> None:
    text = full_script(render_state(mesh_state(WEB, DNS)), ("br0",))
    # One atomic replacement of our table, and only of it.
    assert text.splitlines()[:3] == ["table ip swarm_mesh {}", "delete table ip swarm_mesh", "table ip swarm_mesh {"]
    # VIPs are looked up by address alone: every port of a VIP goes to its service's chain.
    assert "type ipv4_addr : verdict\n\t\telements = { 10.9.0.2 : goto svc_web_vip, 10.9.0.3 : goto svc_dns_vip }" \
        in text
    assert "elements = { tcp . 8080 : goto svc_web_tcp_80 }" in text
    assert 'elements = { "br0" }' in text
    assert "type nat hook output priority -100;" in text
    assert "type nat hook prerouting priority -100;" in text
    assert "type nat hook postrouting priority 100;" in text
    assert "fib daddr type local meta l4proto . th dport vmap @published_services" in text
    # Backends sorted by address, whatever order they came in; a published port names the target port...
    assert ("meta l4proto tcp dnat to numgen random mod 3 map { 0 : 10.0.1.2, 1 : 10.0.1.3, 2 : 10.0.1.4 }:80"
            in text)
    # ... and a VIP DNATs the address only, keeping the destination port; only tcp and udp go there.
    assert "meta l4proto { tcp, udp } ip daddr vmap @vip_services" in text
    assert re.search(r"chain svc_web_vip \{\n\t\tmeta mark set meta mark or 0x00400000 "
                     r'comment "swarm:[0-9a-f]{16}"\n\t\tdnat to numgen random mod 3 '
                     r"map \{ 0 : 10.0.1.2, 1 : 10.0.1.3, 2 : 10.0.1.4 \}\n\t\}", text)
    # No backend: refuse at once rather than black-hole, on every port of the VIP.
    assert re.search(r"chain svc_dns_vip \{\n\t\tmeta l4proto tcp reject with tcp reset "
                     r'comment "swarm:[0-9a-f]{16}"\n\t\tmeta l4proto udp reject with icmp type port-unreachable\n\t\}',
                     text)


def test_vips_are_guarded_from_the_hosts_sockets_and_always_masqueraded() -> None:
    text = full_script(render_state(mesh_state(WEB, DNS)))
    assert "set vip_addresses {\n\t\ttype ipv4_addr\n\t\telements = { 10.9.0.2, 10.9.0.3 }\n\t}" in text
    assert ("chain input {\n\t\ttype filter hook input priority 0; policy accept;\n"
            "\t\tip daddr @vip_addresses meta l4proto { tcp, udp } ct status & dnat == 0 drop\n\t}") in text
    # VIP connections are masqueraded before the exception for local backend interfaces applies.
    assert text.index("ct original ip daddr @vip_addresses masquerade") < text.index("oifname != @local_backend")
    # A state without VIPs still has the (empty) set the input chain reads.
    assert "set vip_addresses {\n\t\ttype ipv4_addr\n\t}" in full_script(render_state({}))


def test_no_backend_tcp_resets_and_single_backend_needs_no_numgen() -> None:
    empty = render_state(mesh_state(MeshService("a", published=(Frontend("tcp", 81, 80),))))
    assert empty.chains["svc_a_tcp_80"].rules == ("meta l4proto tcp reject with tcp reset",)
    one = render_state(mesh_state(MeshService("a", vips=("10.9.0.9",), published=(Frontend("udp", 81, 80),),
                                              backends=(Backend("10.0.0.5"),))))
    assert one.chains["svc_a_udp_80"].rules[-1] == "meta l4proto udp dnat to 10.0.0.5:80"
    assert one.chains["svc_a_vip"].rules[-1] == "dnat to 10.0.0.5"


def test_a_service_without_vips_has_no_vip_chain() -> None:
    table = render_state(mesh_state(MeshService("a", published=(Frontend("tcp", 81, 80),))))
    assert set(table.chains) == {"svc_a_tcp_80"} and not table.vip


def test_two_services_on_one_published_port_conflict() -> None:
    other = MeshService("other", published=(Frontend("tcp", 8080, 8080),))
    with pytest.raises(MeshConflict, match="published port tcp/8080"):
        render_state(mesh_state(WEB, other))


def test_two_services_on_one_vip_conflict() -> None:
    other = MeshService("other", vips=("10.9.0.5", "10.9.0.2"))
    with pytest.raises(MeshConflict, match="services other and web both claim VIP 10.9.0.2"):
        render_state(mesh_state(WEB, other))


def test_model_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="service id"):
        MeshService("bad;id")
    with pytest.raises(ValueError, match="backend address"):
        Backend("10.0.0.300")
    with pytest.raises(ValueError, match="protocol"):
        Frontend("sctp", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frontend port"):
        Frontend("tcp", 0, 1)
    with pytest.raises(ValueError, match="given twice"):
        mesh_state(WEB, WEB)
    with pytest.raises(ValueError, match="VIP twice"):
        MeshService("a", vips=("10.9.0.1", "10.9.0.1"))
    for bad in ("0.32.0.1", "127.0.0.1", "224.0.0.1", "255.255.255.255"):
        with pytest.raises(ValueError, match=f"VIP of service a '{bad}' must be a unicast address"):
            MeshService("a", vips=(bad,))
    with pytest.raises(ValueError, match="published port twice"):
        MeshService("a", published=(Frontend("tcp", 80, 80), Frontend("tcp", 80, 81)))


def test_chain_names_of_distinct_services_never_collide() -> None:
    # A service ID may end like a chain suffix ("a_tcp"); names stay distinct all the same.
    names = [published_chain_name("a_tcp", "tcp", 80), published_chain_name("a", "tcp", 80),
             vip_chain_name("a_tcp_80"), vip_chain_name("a"), vip_chain_name("a_tcp"),
             published_chain_name("a_vip", "udp", 1)]
    assert len(set(names)) == len(names)


_CHAIN = re.compile(r"svc_[A-Za-z0-9_]+?_(?:(?:tcp|udp)_\d+|vip)\b")


def _chains_named(script: str) -> set[str]:
    return set(_CHAIN.findall(script))


def test_diff_touches_only_changed_services() -> None:
    services = [MeshService(f"s{i}", vips=(f"10.9.1.{i}",), published=(Frontend("tcp", 30000 + i, 80),),
                            backends=(Backend(f"10.0.2.{i}"),))
                for i in range(1, 20)]
    before = render_state(mesh_state(*services))
    changed = MeshService("s7", vips=("10.9.1.7",), published=(Frontend("tcp", 30007, 80),),
                          backends=(Backend("10.0.2.7"), Backend("10.0.3.7")))
    added = MeshService("new", vips=("10.9.2.1",), backends=())
    after_services = [changed if s.service_id == "s7" else s for s in services if s.service_id != "s3"] + [added]
    after = render_state(mesh_state(*after_services))
    diff = diff_tables(before.content, after)
    script = diff_script(diff)
    assert _chains_named(script) == {"svc_s7_tcp_80", "svc_s7_vip", "svc_s3_tcp_80", "svc_s3_vip", "svc_new_vip"}
    assert "flush chain ip swarm_mesh svc_s7_tcp_80" in script
    assert "flush chain ip swarm_mesh svc_s7_vip" in script
    assert "add chain ip swarm_mesh svc_new_vip" in script
    assert "delete chain ip swarm_mesh svc_s3_vip" in script
    # A backend change rewrites the chains only; the map and set entries leading to them stay.
    assert "10.9.1.7" not in script and "30007" not in script
    assert "delete element ip swarm_mesh vip_services { 10.9.1.3 }" in script
    assert "delete element ip swarm_mesh vip_addresses { 10.9.1.3 }" in script
    assert "delete element ip swarm_mesh published_services { tcp . 30003 }" in script
    assert "add element ip swarm_mesh vip_services { 10.9.2.1 : goto svc_new_vip }" in script
    assert "add element ip swarm_mesh vip_addresses { 10.9.2.1 }" in script
    # Elements go before the chain they lead to is deleted, and new chains exist before elements lead to them.
    assert script.index("delete element ip swarm_mesh vip_services") < script.index("delete chain")
    assert script.index("add chain ip swarm_mesh svc_new_vip") < script.index("add element")
    assert diff_tables(after.content, after).empty


def test_a_vip_moving_to_another_service_stays_guarded() -> None:
    before = render_state(mesh_state(MeshService("a", vips=("10.9.0.1",)), MeshService("b")))
    after = render_state(mesh_state(MeshService("a"), MeshService("b", vips=("10.9.0.1",))))
    diff = diff_tables(before.content, after)
    assert diff.delete_vip == {"10.9.0.1"} and diff.add_vip == {"10.9.0.1": "svc_b_vip"}
    assert not diff.delete_guarded and not diff.add_guarded
    assert before.content.after(diff) == after.content


def test_identical_states_give_an_empty_diff() -> None:
    assert diff_tables(render_state(mesh_state(WEB, DNS)).content, render_state(mesh_state(DNS, WEB))).empty


def _chain(name: str, **hook: object) -> dict[str, object]:
    return {"chain": {"family": "ip", "table": "swarm_mesh", "name": name, "handle": 1, **hook}}


def _rule(chain: str, comment: str) -> dict[str, object]:
    return {"rule": {"family": "ip", "table": "swarm_mesh", "chain": chain, "handle": 2, "comment": comment,
                     "expr": []}}


def _listing(web_digest: str) -> dict[str, list[dict[str, object]]]:
    """What `nft -j list table ip swarm_mesh` (nft 1.0.6) gives for a table of the current layout."""
    return {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "ip", "name": "swarm_mesh", "handle": 9}},
        {"map": {"family": "ip", "name": "vip_services", "table": "swarm_mesh", "type": "ipv4_addr", "handle": 1,
                 "map": "verdict", "elem": [["10.9.0.2", {"goto": {"target": "svc_web_vip"}}],
                                            ["10.9.0.3", {"goto": {"target": "svc_dns_vip"}}]]}},
        {"map": {"family": "ip", "name": "published_services", "table": "swarm_mesh", "map": "verdict",
                 "type": ["inet_proto", "inet_service"], "handle": 2,
                 "elem": [[{"concat": ["tcp", 8080]}, {"goto": {"target": "svc_web_tcp_80"}}]]}},
        {"set": {"family": "ip", "name": "vip_addresses", "table": "swarm_mesh", "type": "ipv4_addr", "handle": 3,
                 "elem": ["10.9.0.2"]}},
        {"set": {"family": "ip", "name": "local_backend_ifaces", "table": "swarm_mesh", "type": "ifname"}},
        _chain("prerouting", type="nat", hook="prerouting", prio=-100, policy="accept"),
        _chain("output", type="nat", hook="output", prio=-100, policy="accept"),
        _chain("postrouting", type="nat", hook="postrouting", prio=100, policy="accept"),
        _chain("input", type="filter", hook="input", prio=0, policy="accept"),
        _chain("svc_web_vip"),
        _chain("svc_web_tcp_80"),
        _chain("svc_dns_vip"),
        _rule("svc_web_vip", f"swarm:{web_digest}"),
        _rule("svc_web_tcp_80", "swarm:0000000000000000"),
        _rule("svc_dns_vip", "not ours"),
    ]}


def test_parse_listing_reads_digests_and_elements() -> None:
    table = render_state(mesh_state(WEB, DNS))
    web = table.chains["svc_web_vip"]
    content, layout_ok = parse_listing(_listing(web.digest))
    assert layout_ok
    assert content.vip == table.vip and content.published == table.published
    assert content.guarded == {"10.9.0.2"}
    assert content.chains == {"svc_web_vip": web.digest, "svc_web_tcp_80": "0000000000000000", "svc_dns_vip": None}
    # Chains whose digest differs (or is unknown) are rewritten; the one that matches is left alone. The VIP
    # missing from the guard set is added to it.
    diff = diff_tables(content, table)
    assert set(diff.write_chains) == {"svc_web_tcp_80", "svc_dns_vip"} and not diff.new_chains
    assert diff.add_guarded == {"10.9.0.3"} and not diff.add_vip


def test_the_previous_layout_is_not_adopted() -> None:
    # The layout before VIPs forwarded every port: VIP map keyed by address, protocol and port; no guard set and
    # no input chain. Each of these differences alone makes the table another layout.
    listing = _listing("0" * 16)
    vip_map = listing["nftables"][2]["map"]
    assert isinstance(vip_map, dict)
    vip_map["type"] = ["ipv4_addr", "inet_proto", "inet_service"]
    vip_map["elem"] = [[{"concat": ["10.9.0.2", "tcp", 80]}, {"goto": {"target": "svc_web_tcp_80"}}]]
    assert parse_listing(listing)[1] is False
    without_guard = _listing("0" * 16)
    del without_guard["nftables"][4]
    assert parse_listing(without_guard)[1] is False
    without_input = _listing("0" * 16)
    del without_input["nftables"][9]
    assert parse_listing(without_input)[1] is False
    input_of_another_type = _listing("0" * 16)
    input_chain = input_of_another_type["nftables"][9]["chain"]
    assert isinstance(input_chain, dict)
    input_chain["type"] = "nat"
    assert parse_listing(input_of_another_type)[1] is False


def test_reconcile_replaces_a_table_of_the_previous_layout_in_one_transaction(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listing = _listing("0" * 16)
    listing["nftables"][2]["map"]["type"] = ["ipv4_addr", "inet_proto", "inet_service"]  # type: ignore[index]
    scripts: list[str] = []
    mesh = NftablesMesh()
    monkeypatch.setattr(mesh, "listing", lambda: listing)
    monkeypatch.setattr(mesh, "_commit", lambda script, what: scripts.append(script))
    mesh.reconcile_on_start(mesh_state(WEB))
    assert scripts == [full_script(render_state(mesh_state(WEB)))]
    # Afterwards, the mesh knows what it applied and changes it incrementally.
    mesh.apply(mesh_state(WEB, DNS))
    assert _chains_named(scripts[1]) == {"svc_dns_vip"}


def test_apply_without_a_previous_apply_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    scripts: list[str] = []
    mesh = NftablesMesh()
    monkeypatch.setattr(mesh, "_commit", lambda script, what: scripts.append(script))
    mesh.apply(mesh_state(WEB))
    mesh.apply(mesh_state(WEB))
    mesh.apply(mesh_state(WEB, DNS))
    assert len(scripts) == 2
    assert scripts[0].startswith("table ip swarm_mesh {}\ndelete table ip swarm_mesh\n")
    assert _chains_named(scripts[1]) == {"svc_dns_vip"}


# Hypothesis: any sequence of states, applied incrementally, ends where a full render of the last state is.
_IDS = ["a", "b", "c", "d", "e"]
_VIPS = [f"10.9.0.{i}" for i in range(1, 7)]
_frontends = st.builds(Frontend, st.sampled_from(["tcp", "udp"]), st.integers(1, 6), st.integers(1, 4))
_backends = st.lists(st.builds(Backend, st.sampled_from([f"10.0.0.{i}" for i in range(1, 8)])), max_size=5)


@st.composite
def _states(draw: st.DrawFn) -> MeshState:
    services = []
    used_published: set[tuple[str, int]] = set()
    used_vips: set[str] = set()
    for sid in draw(st.lists(st.sampled_from(_IDS), unique=True, max_size=5)):
        published = tuple({(f.proto, f.port): f for f in draw(st.lists(_frontends, max_size=2))
                           if (f.proto, f.port) not in used_published}.values())
        used_published.update((f.proto, f.port) for f in published)
        # No two services share a VIP (as the allocator guarantees), but a VIP may pass from one service to
        # another between two states; a service may have none, one or two.
        vips = tuple(v for v in draw(st.lists(st.sampled_from(_VIPS), unique=True, max_size=2))
                     if v not in used_vips)
        used_vips.update(vips)
        services.append(MeshService(sid, vips, published, tuple(draw(_backends))))
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
        assert applied.guarded == set(desired.vip)
        # The transaction names only chains of services that changed.
        changed = {sid for sid in previous.keys() | state.keys() if previous.get(sid) != state.get(sid)}
        assert {name.split("_")[1] for name in _chains_named(script)} <= changed
        previous = state
