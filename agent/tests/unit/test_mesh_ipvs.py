"""The IPVS mesh: translation of a MeshState into IPVS fwmark services, destinations and mark rules."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_agent.net.mesh.ipvs import (
    ALL_PORTS,
    FWMARK_BASE,
    FwmarkRule,
    IpvsDestination,
    IpvsService,
    VipMark,
    marks_in_listing,
    fwmark_of,
    is_published_fwmark,
    render_fwmark_table,
    translate,
    vip_fwmark,
)
from swarm_agent.net.mesh.model import Backend, Frontend, MeshService, mesh_state

WEB = MeshService("web", vips=("10.9.0.2", "10.9.1.2"), published=(Frontend("tcp", 8080, 80),),
                  backends=(Backend("10.0.1.3"), Backend("10.0.1.2")))
DNS = MeshService("dns", vips=("10.9.0.3",), published=(Frontend("udp", 53, 5353),))


def test_translation_of_vips_and_published_ports() -> None:
    plan = translate(mesh_state(WEB, DNS))
    every_port = (IpvsDestination("10.0.1.2", ALL_PORTS), IpvsDestination("10.0.1.3", ALL_PORTS))
    assert set(plan.services) == {
        # Each VIP is one fwmark service for every port: destinations with port 0 keep the packet's port.
        IpvsService(0x0A090002, every_port),
        IpvsService(0x0A090102, every_port),
        # A published port goes to the target port.
        IpvsService(fwmark_of("tcp", 8080), (IpvsDestination("10.0.1.2", 80), IpvsDestination("10.0.1.3", 80))),
        # A service without tasks keeps its IPVS services: IPVS answers port-unreachable rather than nothing.
        IpvsService(0x0A090003, ()),
        IpvsService(fwmark_of("udp", 53), ()),
    }
    assert ALL_PORTS == 0
    assert plan.fwmarks == (FwmarkRule("tcp", 8080, FWMARK_BASE + 8080),
                            FwmarkRule("udp", 53, FWMARK_BASE + 0x10000 + 53))
    assert plan.vip_marks == (VipMark("10.9.0.2", 0x0A090002), VipMark("10.9.0.3", 0x0A090003),
                              VipMark("10.9.1.2", 0x0A090102))
    assert all(s.scheduler == "rr" for s in plan.services)


def test_fwmarks_are_distinct_per_protocol_and_port() -> None:
    marks = {fwmark_of(proto, port) for proto in ("tcp", "udp") for port in range(1, 65536)}
    assert len(marks) == 2 * 65535
    assert all(is_published_fwmark(mark) for mark in marks)


@given(st.integers(0, 2**32 - 1))
def test_vip_marks_are_distinct_and_never_a_published_ports(value: int) -> None:
    address = str(ipaddress.IPv4Address(value))
    try:
        MeshService("a", vips=(address,))
    except ValueError:
        return  # not a VIP the model admits
    # The mark is the address itself: injective, stable across restarts, and outside the published range
    # because the model refuses 0.0.0.0/8, where all published marks lie.
    assert vip_fwmark(address) == value
    assert not is_published_fwmark(vip_fwmark(address))


def test_published_marks_lie_in_addresses_no_vip_may_have() -> None:
    for mark in (fwmark_of("tcp", 1), fwmark_of("udp", 65535)):
        with pytest.raises(ValueError, match="must be a unicast address"):
            MeshService("a", vips=(str(ipaddress.IPv4Address(mark)),))


def test_translation_is_independent_of_input_order() -> None:
    shuffled = MeshService("web", vips=tuple(reversed(WEB.vips)), published=WEB.published,
                           backends=tuple(reversed(WEB.backends)))
    assert translate(mesh_state(WEB, DNS)) == translate(mesh_state(DNS, shuffled))


def test_a_published_port_claimed_twice_is_refused() -> None:
    other = MeshService("other", published=(Frontend("tcp", 8080, 9000),))
    with pytest.raises(ValueError, match="published port tcp/8080 is claimed by services other and web"):
        translate(mesh_state(WEB, other))


def test_a_vip_claimed_twice_is_refused() -> None:
    other = MeshService("other", vips=("10.9.1.2",))
    with pytest.raises(ValueError, match="VIP 10.9.1.2 is claimed by services other and web"):
        translate(mesh_state(WEB, other))


def test_fwmark_table_marks_vips_and_published_ports() -> None:
    text = render_fwmark_table(translate(mesh_state(WEB, DNS)))
    assert text.startswith("table ip swarm_mesh_ipvs {}\ndelete table ip swarm_mesh_ipvs\n")
    assert f"elements = {{ tcp . 8080 : {FWMARK_BASE + 8080:#010x}, udp . 53 : {FWMARK_BASE + 0x10000 + 53:#010x} }}" \
        in text
    assert "elements = { 10.9.0.2 : 0x0a090002, 10.9.0.3 : 0x0a090003, 10.9.1.2 : 0x0a090102 }" in text
    published = "fib daddr type local meta mark set meta l4proto . th dport map @published_marks"
    vip = "meta l4proto { tcp, udp } meta mark set ip daddr map @vip_marks"
    assert text.count(published) == 2 and text.count(vip) == 2
    # A VIP is a local address too: its mark is set after a published port's, and wins.
    assert text.index(published) < text.index(vip)
    # What IPVS did not take must not reach the host's sockets.
    assert "type filter hook input priority 200; policy accept;\n" \
           "\t\tip daddr @vip_addresses meta l4proto { tcp, udp } drop" in text
    assert "elements = { 10.9.0.2, 10.9.0.3, 10.9.1.2 }" in text
    assert "elements" not in render_fwmark_table(translate({}))


def test_marks_of_a_previous_table_are_read_back() -> None:
    # `nft -j list table ip swarm_mesh_ipvs` as nft 1.0.6 gives it: an agent after a restart owns these marks.
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"map": {"family": "ip", "name": "published_marks", "table": "swarm_mesh_ipvs",
                 "type": ["inet_proto", "inet_service"], "map": "mark",
                 "elem": [[{"concat": ["tcp", 8080]}, 2105232]]}},
        {"map": {"family": "ip", "name": "vip_marks", "table": "swarm_mesh_ipvs", "type": "ipv4_addr",
                 "map": "mark", "elem": [["10.9.0.2", 168361986], ["10.9.1.2", 168362242]]}},
        {"set": {"family": "ip", "name": "vip_addresses", "table": "swarm_mesh_ipvs", "type": "ipv4_addr",
                 "elem": ["10.9.0.2", "10.9.1.2"]}},
    ]}
    assert marks_in_listing(listing) == {fwmark_of("tcp", 8080), vip_fwmark("10.9.0.2"), vip_fwmark("10.9.1.2")}
    assert marks_in_listing({"nftables": []}) == set()
