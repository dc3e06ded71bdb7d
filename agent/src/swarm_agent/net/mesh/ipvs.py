"""The routing mesh on IPVS, for kernels that have it (this project's test kernel does not).

Every IPVS service here is a firewall-mark service, as in Docker: a small nftables table
(`table ip swarm_mesh_ipvs`) marks the packets and IPVS balances each mark over its destinations.

- A VIP forwards every tcp and udp port: packets to it get the VIP's mark (`ip daddr` -> mark), and the
  destinations have port 0, which IPVS reads as "the packet's own destination port".
- A published port must answer on every local address, which an IPVS address service cannot express either:
  packets to a local address on that protocol and port get its mark, and the destinations have the target port.

The translation is pure and unit-tested; `IpvsMesh` only writes it to the kernel through pyroute2.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .model import MeshState

log = logging.getLogger(__name__)

MARK_TABLE = "swarm_mesh_ipvs"
VIP_MARKS = "vip_marks"
PUBLISHED_MARKS = "published_marks"
# Marks are pure functions of what they stand for, so they survive agent restarts without a table of
# assignments, and two agents (or an agent before and after a restart) always agree:
# - a published port's mark is base + 0x10000 for UDP + port, all within 0x00200000-0x0021ffff;
# - a VIP's mark is the VIP's own 32-bit value. The model refuses VIPs in 0.0.0.0/8, where every published mark
#   lies (0x00200000 is 0.32.0.0), so the two kinds never meet, and distinct VIPs have distinct marks.
FWMARK_BASE = 0x00200000
SCHEDULER = "rr"
# IPVS's masquerading (NAT) forwarding method: the only one that works with backends on other hosts' overlays.
FWD_MASQ = 0
# A destination port of 0 in a fwmark service keeps the packet's destination port.
ALL_PORTS = 0


def fwmark_of(proto: str, port: int) -> int:
    """The mark of a published port."""
    return FWMARK_BASE + (0x10000 if proto == "udp" else 0) + port


def vip_fwmark(vip: str) -> int:
    """The mark of a VIP: its own value (see above)."""
    return int(ipaddress.IPv4Address(vip))


def is_published_fwmark(mark: int) -> bool:
    return mark & ~0x1FFFF == FWMARK_BASE


@dataclass(frozen=True, order=True)
class IpvsDestination:
    ip: str
    port: int
    weight: int = 1


@dataclass(frozen=True)
class IpvsService:
    """An IPVS firewall-mark service: every packet carrying `fwmark`, whatever its protocol, address or port."""

    fwmark: int
    destinations: tuple[IpvsDestination, ...]
    scheduler: str = SCHEDULER


@dataclass(frozen=True, order=True)
class FwmarkRule:
    """Packets to a local address on `proto`/`port` get `fwmark`, so that an IPVS fwmark service takes them."""

    proto: str
    port: int
    fwmark: int


@dataclass(frozen=True, order=True)
class VipMark:
    """Packets to `vip` on any tcp or udp port get `fwmark`."""

    vip: str
    fwmark: int


@dataclass(frozen=True)
class IpvsPlan:
    services: tuple[IpvsService, ...]
    fwmarks: tuple[FwmarkRule, ...]
    vip_marks: tuple[VipMark, ...]


def translate(state: MeshState) -> IpvsPlan:
    """IPVS services and destinations, and the marks they need, for a MeshState; ValueError names a port or VIP
    two services claim."""
    services: dict[int, IpvsService] = {}
    marks: dict[tuple[str, int], FwmarkRule] = {}
    vip_marks: dict[str, VipMark] = {}
    owners: dict[int, str] = {}

    def add(svc: IpvsService, what: str, service_id: str) -> None:
        owner = owners.setdefault(svc.fwmark, service_id)
        if owner != service_id or svc.fwmark in services:
            raise ValueError(f"{what} is claimed by services {owner} and {service_id}")
        services[svc.fwmark] = svc

    for service in sorted(state.values(), key=lambda s: s.service_id):
        ips = sorted({b.ip for b in service.backends}, key=ipaddress.IPv4Address)
        for frontend in service.published:
            rule = FwmarkRule(frontend.proto, frontend.port, fwmark_of(frontend.proto, frontend.port))
            add(IpvsService(rule.fwmark, tuple(IpvsDestination(ip, frontend.target_port) for ip in ips)),
                f"published port {frontend.proto}/{frontend.port}", service.service_id)
            marks[(rule.proto, rule.port)] = rule
        for vip in service.vips:
            mark = VipMark(vip, vip_fwmark(vip))
            add(IpvsService(mark.fwmark, tuple(IpvsDestination(ip, ALL_PORTS) for ip in ips)), f"VIP {vip}",
                service.service_id)
            vip_marks[vip] = mark
    return IpvsPlan(tuple(services[m] for m in sorted(services)), tuple(sorted(marks.values())),
                    tuple(sorted(vip_marks.values(), key=lambda m: m.fwmark)))


def render_fwmark_table(plan: IpvsPlan) -> str:
    """The nftables table that marks packets for IPVS, replacing any previous one atomically."""
    out = [f"table ip {MARK_TABLE} {{}}", f"delete table ip {MARK_TABLE}", f"table ip {MARK_TABLE} {{"]
    for name, keytype, entries in (
            (PUBLISHED_MARKS, "inet_proto . inet_service", [f"{r.proto} . {r.port} : {r.fwmark:#010x}"
                                                             for r in plan.fwmarks]),
            (VIP_MARKS, "ipv4_addr", [f"{m.vip} : {m.fwmark:#010x}" for m in plan.vip_marks])):
        out.append(f"\tmap {name} {{\n\t\ttype {keytype} : mark")
        if entries:
            out.append(f"\t\telements = {{ {', '.join(entries)} }}")
        out.append("\t}")
    out.append("\tset vip_addresses {\n\t\ttype ipv4_addr")
    if plan.vip_marks:
        out.append(f"\t\telements = {{ {', '.join(m.vip for m in plan.vip_marks)} }}")
    out.append("\t}")
    # IPVS reads the mark at LOCAL_IN, after routing: mark before it (mangle priority, -150). A VIP is a local
    # address too, so its rule comes last and wins over a published port's.
    for chain, hook in (("prerouting", "type filter hook prerouting priority -150; policy accept;"),
                        ("output", "type route hook output priority -150; policy accept;")):
        out.append(f"\tchain {chain} {{\n\t\t{hook}")
        out.append(f"\t\tfib daddr type local meta mark set meta l4proto . th dport map @{PUBLISHED_MARKS}")
        out.append(f"\t\tmeta l4proto {{ tcp, udp }} meta mark set ip daddr map @{VIP_MARKS}")
        out.append("\t}")
    # VIPs are local addresses of the node: tcp and udp to one that IPVS did not take (it takes them at LOCAL_IN,
    # priority 98, and they go no further) must not reach the host's own sockets.
    out.append("\tchain input {\n\t\ttype filter hook input priority 200; policy accept;")
    out.append("\t\tip daddr @vip_addresses meta l4proto { tcp, udp } drop")
    out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def marks_in_listing(listing: dict[str, Any]) -> set[int]:
    """The marks a `nft -j list table` of the mark table hands out: those an agent before this one used."""
    marks: set[int] = set()
    for obj in listing.get("nftables", []):
        m = obj.get("map")
        if m is not None and m.get("name") in (VIP_MARKS, PUBLISHED_MARKS):
            marks.update(value for _, value in m.get("elem", []) if isinstance(value, int))
    return marks


def ipvs_available() -> tuple[bool, str]:
    """Whether this kernel's IPVS answers through pyroute2, and why not when it does not."""
    try:
        from pyroute2 import IPVS
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError:
        return False, "pyroute2 is not installed"
    try:
        handle = IPVS()
    except (NetlinkError, OSError) as exc:  # NetlinkError(2) where the kernel has no IPVS netlink family
        return False, f"kernel without IPVS ({exc})"
    handle.close()
    return True, "the kernel's IPVS answers"


class IpvsMesh:
    """The mesh backend on IPVS: fwmark services and destinations through pyroute2, marks through nft.

    IPVS has no transactions; changes are made service by service, removing what is gone last so that a
    service never loses all its destinations while it is being changed.
    """

    name = "ipvs"

    def __init__(self, nft_command: Sequence[str] = ("nft",)) -> None:
        from pyroute2 import IPVS

        self._ipvs = IPVS()
        self._nft = tuple(nft_command)
        self._owned: set[int] = set()

    def close(self) -> None:
        self._ipvs.close()

    def _run_nft(self, *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._nft, *args], input=script, capture_output=True, text=True, check=False)

    def _service_arg(self, svc: IpvsService) -> Any:
        from pyroute2 import IPVSService

        return IPVSService(fwmark=svc.fwmark, af=socket.AF_INET, sched_name=svc.scheduler)

    def _current(self) -> dict[int, tuple[Any, set[IpvsDestination]]]:
        """The kernel's fwmark services by mark (address services are never ours: skipped)."""
        from pyroute2 import IPVSDest, IPVSService

        current: dict[int, tuple[Any, set[IpvsDestination]]] = {}
        for message in self._ipvs.service("dump"):
            svc = IPVSService.from_message(message)
            fwmark = svc.get("fwmark")
            if not fwmark:
                continue
            dests = {IpvsDestination(d["addr"], d["port"], d.get("weight", 1))
                     for d in map(IPVSDest.from_message, self._ipvs.dest("dump", service=svc))}
            current[fwmark] = (svc, dests)
        return current

    def _marks_of_previous_table(self) -> set[int]:
        done = self._run_nft("-j", "list", "table", "ip", MARK_TABLE)
        return marks_in_listing(json.loads(done.stdout)) if done.returncode == 0 else set()

    def apply(self, desired: MeshState) -> None:
        from pyroute2 import IPVSDest

        plan = translate(desired)
        # The marks the table held before this apply are ours even after a restart: their services may be removed.
        owned = self._owned | self._marks_of_previous_table()
        done = self._run_nft("-f", "-", script=render_fwmark_table(plan))
        if done.returncode != 0:
            raise RuntimeError(f"nft refused the IPVS mark table: {done.stderr.strip()}")
        current = self._current()
        for svc in plan.services:
            arg = self._service_arg(svc)
            have = current.get(svc.fwmark)
            if have is None:
                self._ipvs.service("add", service=arg)
                existing: set[IpvsDestination] = set()
                log.info("IPVS fwmark service %#010x added", svc.fwmark)
            else:
                existing = have[1]
            want = set(svc.destinations)
            for dest in sorted(want - existing):
                self._ipvs.dest("add", service=arg, dest=IPVSDest(addr=dest.ip, port=dest.port, weight=dest.weight,
                                                                  fwd_method=FWD_MASQ))
            for dest in sorted(existing - want):
                self._ipvs.dest("del", service=arg, dest=IPVSDest(addr=dest.ip, port=dest.port))
        wanted = {svc.fwmark for svc in plan.services}
        for mark, (svc, _) in current.items():
            # Remove only what this agent (or the one before its restart) made; the rest is someone else's.
            if mark not in wanted and (mark in owned or is_published_fwmark(mark)):
                self._ipvs.service("del", service=svc)
                log.info("IPVS fwmark service %#010x removed", mark)
        self._owned = wanted

    full = apply
    reconcile_on_start = apply
