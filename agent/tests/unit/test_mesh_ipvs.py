"""The IPVS mesh: translation of a MeshState into IPVS services, destinations and fwmark rules."""
from __future__ import annotations

import pytest

from swarm_agent.net.mesh.ipvs import (
    FWMARK_BASE,
    FwmarkRule,
    IpvsDestination,
    IpvsService,
    fwmark_of,
    render_fwmark_table,
    translate,
)
from swarm_agent.net.mesh.model import Backend, Frontend, MeshService, mesh_state

WEB = MeshService("web", vips=("10.9.0.2", "10.9.1.2"), published=(Frontend("tcp", 8080, 80),),
                  vip_ports=(Frontend("tcp", 80, 80),), backends=(Backend("10.0.1.3"), Backend("10.0.1.2")))
DNS = MeshService("dns", vips=("10.9.0.3",), published=(Frontend("udp", 53, 5353),),
                  vip_ports=(Frontend("udp", 53, 5353),))


def test_translation_of_vips_and_published_ports() -> None:
    plan = translate(mesh_state(WEB, DNS))
    web_dests = (IpvsDestination("10.0.1.2", 80), IpvsDestination("10.0.1.3", 80))
    assert set(plan.services) == {
        IpvsService("tcp", "10.9.0.2", 80, None, web_dests),
        IpvsService("tcp", "10.9.1.2", 80, None, web_dests),
        IpvsService("tcp", None, None, fwmark_of("tcp", 8080), web_dests),
        # A service without tasks keeps its IPVS service: IPVS answers port-unreachable rather than nothing.
        IpvsService("udp", "10.9.0.3", 53, None, ()),
        IpvsService("udp", None, None, fwmark_of("udp", 53), ()),
    }
    assert plan.fwmarks == (FwmarkRule("tcp", 8080, FWMARK_BASE + 8080),
                            FwmarkRule("udp", 53, FWMARK_BASE + 0x10000 + 53))
    assert all(s.scheduler == "rr" for s in plan.services)


def test_fwmarks_are_distinct_per_protocol_and_port() -> None:
    marks = {fwmark_of(proto, port) for proto in ("tcp", "udp") for port in range(1, 65536)}
    assert len(marks) == 2 * 65535
    assert all(mark & ~0x1FFFF == FWMARK_BASE for mark in marks)


def test_translation_is_independent_of_input_order() -> None:
    shuffled = MeshService("web", vips=WEB.vips, published=WEB.published, vip_ports=WEB.vip_ports,
                           backends=tuple(reversed(WEB.backends)))
    assert translate(mesh_state(WEB, DNS)) == translate(mesh_state(DNS, shuffled))


def test_a_published_port_claimed_twice_is_refused() -> None:
    other = MeshService("other", published=(Frontend("tcp", 8080, 9000),))
    with pytest.raises(ValueError, match="8080"):
        translate(mesh_state(WEB, other))


def test_fwmark_table_marks_published_ports_to_local_addresses() -> None:
    text = render_fwmark_table(translate(mesh_state(WEB, DNS)))
    assert text.startswith("table ip swarm_mesh_ipvs {}\ndelete table ip swarm_mesh_ipvs\n")
    assert f"elements = {{ tcp . 8080 : {FWMARK_BASE + 8080:#010x}, udp . 53 : {FWMARK_BASE + 0x10000 + 53:#010x} }}" \
        in text
    assert text.count("fib daddr type local meta mark set meta l4proto . th dport map @published_marks") == 2
    assert "elements" not in render_fwmark_table(translate({}))

