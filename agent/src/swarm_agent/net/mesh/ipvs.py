"""The routing mesh on IPVS, for kernels that have it (this project's test kernel does not).

A VIP port is an IPVS service on (VIP, protocol, port). A published port must answer on every local address,
which an IPVS address service cannot express; as Docker's ingress does, such packets get a firewall mark from
a small nftables table (`table ip swarm_mesh_ipvs`), and an IPVS fwmark service balances them. The translation
is pure and unit-tested; `IpvsMesh` only writes it to the kernel through pyroute2.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .model import MeshState

log = logging.getLogger(__name__)

MARK_TABLE = "swarm_mesh_ipvs"
# Marks are a pure function of (protocol, published port), so they survive agent restarts without a table of
# assignments: base + 0x10000 for UDP + port.
FWMARK_BASE = 0x00200000
_PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
SCHEDULER = "rr"
# IPVS's masquerading (NAT) forwarding method: the only one that works with backends on other hosts' overlays.
FWD_MASQ = 0


def fwmark_of(proto: str, port: int) -> int:
    return FWMARK_BASE + (0x10000 if proto == "udp" else 0) + port


@dataclass(frozen=True, order=True)
class IpvsDestination:
    ip: str
    port: int
    weight: int = 1


@dataclass(frozen=True)
class IpvsService:
    """An IPVS virtual service: by address (`vip`, `proto`, `port`) or by firewall mark (`fwmark`)."""

    proto: str
    vip: str | None
    port: int | None
    fwmark: int | None
    destinations: tuple[IpvsDestination, ...]
    scheduler: str = SCHEDULER

    @property
    def key(self) -> tuple[str, str | None, int | None, int | None]:
        return (self.proto, self.vip, self.port, self.fwmark)


@dataclass(frozen=True, order=True)
class FwmarkRule:
    """Packets to a local address on `proto`/`port` get `fwmark`, so that an IPVS fwmark service takes them."""

    proto: str
    port: int
    fwmark: int


@dataclass(frozen=True)
class IpvsPlan:
    services: tuple[IpvsService, ...]
    fwmarks: tuple[FwmarkRule, ...]


def translate(state: MeshState) -> IpvsPlan:
    """IPVS services and destinations, and the fwmark rules published ports need, for a MeshState."""
    services: dict[tuple[Any, ...], IpvsService] = {}
    marks: dict[tuple[str, int], FwmarkRule] = {}
    for service in sorted(state.values(), key=lambda s: s.service_id):
        ips = sorted({b.ip for b in service.backends}, key=ipaddress.IPv4Address)
        for frontend in service.published:
            rule = FwmarkRule(frontend.proto, frontend.port, fwmark_of(frontend.proto, frontend.port))
            if marks.setdefault((frontend.proto, frontend.port), rule) != rule:
                raise ValueError(f"published port {frontend.proto}/{frontend.port} is claimed twice")
            dests = tuple(IpvsDestination(ip, frontend.target_port) for ip in ips)
            svc = IpvsService(frontend.proto, None, None, rule.fwmark, dests)
            if services.setdefault(svc.key, svc) is not svc:
                raise ValueError(f"published port {frontend.proto}/{frontend.port} is claimed twice")
        for frontend in service.vip_ports:
            dests = tuple(IpvsDestination(ip, frontend.target_port) for ip in ips)
            for vip in service.vips:
                svc = IpvsService(frontend.proto, vip, frontend.port, None, dests)
                if services.setdefault(svc.key, svc) is not svc:
                    raise ValueError(f"VIP port {vip} {frontend.proto}/{frontend.port} is claimed twice")
    ordered = sorted(services.values(), key=lambda s: (s.fwmark or 0, s.vip or "", s.proto, s.port or 0))
    return IpvsPlan(tuple(ordered), tuple(sorted(marks.values())))


def render_fwmark_table(plan: IpvsPlan) -> str:
    """The nftables table that marks published-port packets for IPVS, replacing any previous one atomically."""
    out = [f"table ip {MARK_TABLE} {{}}", f"delete table ip {MARK_TABLE}", f"table ip {MARK_TABLE} {{",
           "\tmap published_marks {\n\t\ttype inet_proto . inet_service : mark"]
    if plan.fwmarks:
        entries = ", ".join(f"{r.proto} . {r.port} : {r.fwmark:#010x}" for r in plan.fwmarks)
        out.append(f"\t\telements = {{ {entries} }}")
    out.append("\t}")
    # IPVS reads the mark at LOCAL_IN, after routing: mark before it (mangle priority, -150).
    for chain, hook in (("prerouting", "type filter hook prerouting priority -150; policy accept;"),
                        ("output", "type route hook output priority -150; policy accept;")):
        out.append(f"\tchain {chain} {{\n\t\t{hook}")
        out.append("\t\tfib daddr type local meta mark set meta l4proto . th dport map @published_marks")
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


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
    """The mesh backend on IPVS: services and destinations through pyroute2, marks through nft.

    IPVS has no transactions; changes are made service by service, removing what is gone last so that a
    service never loses all its destinations while it is being changed.
    """

    name = "ipvs"

    def __init__(self, nft_command: Sequence[str] = ("nft",)) -> None:
        from pyroute2 import IPVS

        self._ipvs = IPVS()
        self._nft = tuple(nft_command)
        self._owned: set[tuple[Any, ...]] = set()

    def close(self) -> None:
        self._ipvs.close()

    def _service_arg(self, svc: IpvsService) -> Any:
        from pyroute2 import IPVSService

        if svc.fwmark is not None:
            return IPVSService(fwmark=svc.fwmark, af=socket.AF_INET, sched_name=svc.scheduler)
        return IPVSService(addr=svc.vip, port=svc.port, protocol=_PROTO_NUMBERS[svc.proto],
                           sched_name=svc.scheduler)

    def _current(self) -> dict[tuple[Any, ...], tuple[Any, set[IpvsDestination]]]:
        from pyroute2 import IPVSDest, IPVSService

        current: dict[tuple[Any, ...], tuple[Any, set[IpvsDestination]]] = {}
        numbers = {v: k for k, v in _PROTO_NUMBERS.items()}
        for message in self._ipvs.service("dump"):
            svc = IPVSService.from_message(message)
            fwmark = svc.get("fwmark") or None
            proto = numbers.get(svc.get("protocol"), "tcp")
            key = (proto, None, None, fwmark) if fwmark else (proto, svc.get("addr"), svc.get("port"), None)
            dests = {IpvsDestination(d["addr"], d["port"], d.get("weight", 1))
                     for d in map(IPVSDest.from_message, self._ipvs.dest("dump", service=svc))}
            current[key] = (svc, dests)
        return current

    def apply(self, desired: MeshState) -> None:
        from pyroute2 import IPVSDest

        plan = translate(desired)
        done = subprocess.run([*self._nft, "-f", "-"], input=render_fwmark_table(plan), capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nft refused the IPVS mark table: {done.stderr.strip()}")
        current = self._current()
        for svc in plan.services:
            arg = self._service_arg(svc)
            have = current.get(svc.key)
            if have is None:
                self._ipvs.service("add", service=arg)
                existing: set[IpvsDestination] = set()
                log.info("IPVS service %s added", svc.key)
            else:
                existing = have[1]
            want = set(svc.destinations)
            for dest in sorted(want - existing):
                self._ipvs.dest("add", service=arg, dest=IPVSDest(addr=dest.ip, port=dest.port, weight=dest.weight,
                                                                  fwd_method=FWD_MASQ))
            for dest in sorted(existing - want):
                self._ipvs.dest("del", service=arg, dest=IPVSDest(addr=dest.ip, port=dest.port))
        wanted = {svc.key for svc in plan.services}
        for key, (svc, _) in current.items():
            # Remove only what this agent made: services it applied before, and fwmark services in its mark
            # range (which also catches those of an agent that ran before a restart); the rest is someone else's.
            ours = key in self._owned or (key[3] is not None and key[3] & ~0x1FFFF == FWMARK_BASE)
            if key not in wanted and ours:
                self._ipvs.service("del", service=svc)
                log.info("IPVS service %s removed", key)
        self._owned = wanted

    full = apply
    reconcile_on_start = apply
