"""What the routing mesh must serve: services, their VIPs and published ports, and their healthy backends.

This is the one input of every mesh backend (nftables, IPVS). It is plain data, validated on construction, so
that a backend can render it without checking it again and a bad endpoint from gossip fails where it enters.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["tcp", "udp"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")

# Service IDs become part of nftables chain names; Docker's IDs are lowercase alphanumerics, and admitting
# anything else would let an ID inject syntax into the ruleset.
_SERVICE_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _check_ipv4(address: str, what: str) -> None:
    try:
        ipaddress.IPv4Address(address)
    except ValueError as exc:
        raise ValueError(f"{what} {address!r} is not an IPv4 address") from exc


_NOT_A_VIP = ipaddress.IPv4Network("0.0.0.0/8")


def _check_vip(address: str, service_id: str) -> None:
    _check_ipv4(address, f"VIP of service {service_id}")
    # A VIP becomes a local address of the node and (on IPVS) a firewall mark equal to its value: it must be
    # an address a packet can be sent to, and never 0.0.0.0/8, whose values are the marks of published ports.
    ip = ipaddress.IPv4Address(address)
    if ip in _NOT_A_VIP or ip.is_multicast or ip.is_loopback or ip.is_reserved:
        raise ValueError(f"VIP of service {service_id} {address!r} must be a unicast address (not in 0.0.0.0/8, "
                         "loopback, multicast or reserved)")


def _check_port(port: int, what: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} {port!r} is not a port (1-65535)")


@dataclass(frozen=True, order=True)
class Backend:
    """A healthy task of a service, reached at its overlay address.

    There is no port here: a VIP forwards every port to the same port of a task, and a published port names
    the task's port itself (`Frontend.target_port`).
    """

    ip: str

    def __post_init__(self) -> None:
        _check_ipv4(self.ip, "backend address")


@dataclass(frozen=True, order=True)
class Frontend:
    """A published port the mesh answers on (`port`) and the port of the tasks it forwards to (`target_port`)."""

    proto: Protocol
    port: int
    target_port: int

    def __post_init__(self) -> None:
        if self.proto not in PROTOCOLS:
            raise ValueError(f"protocol {self.proto!r} is not one of {', '.join(PROTOCOLS)}")
        _check_port(self.port, "frontend port")
        _check_port(self.target_port, "target port")


@dataclass(frozen=True)
class MeshService:
    """One service as the mesh sees it.

    `published` ports answer on every local address of every node (mode ingress). Each of the `vips` (one per
    overlay network) forwards EVERY tcp and udp port to the same port of a backend, as Docker's VIPs do: a
    service reached at `redis:6379` declares no port at all.
    """

    service_id: str
    vips: tuple[str, ...] = ()
    published: tuple[Frontend, ...] = ()
    backends: tuple[Backend, ...] = ()

    def __post_init__(self) -> None:
        # Callers may pass lists; tuples keep the service hashable (renderers cache by it) and truly frozen.
        for name in ("vips", "published", "backends"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not _SERVICE_ID.match(self.service_id):
            raise ValueError(f"service id {self.service_id!r} must be 1-64 letters, digits or '_'")
        for vip in self.vips:
            _check_vip(vip, self.service_id)
        if len(set(self.vips)) != len(self.vips):
            raise ValueError(f"service {self.service_id} has a VIP twice: {sorted(self.vips)}")
        keys = [(f.proto, f.port) for f in self.published]
        if len(set(keys)) != len(keys):
            raise ValueError(f"service {self.service_id} has a published port twice: {sorted(keys)}")


MeshState = dict[str, MeshService]
"""Every service the mesh serves, by service ID."""


def mesh_state(*services: MeshService) -> MeshState:
    """A MeshState of these services, refusing two with the same ID."""
    state: MeshState = {}
    for service in services:
        if service.service_id in state:
            raise ValueError(f"service {service.service_id} is given twice")
        state[service.service_id] = service
    return state
