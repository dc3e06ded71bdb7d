"""Address management for overlay networks: subnets from the cluster's pools, VXLAN IDs, and addresses.

Pure functions over what is taken; the callers hold the etcd claims that make a choice stick
(``store.state``: ``/swarm/ipam/...``), so two managers can never hand out the same thing twice.

Every overlay network is one layer-2 segment across the nodes (a bridge per node, joined by VXLAN), as in
Docker: any task may get any address of the subnet, and each node that runs tasks of the network holds one
address of it itself (its bridge's address, which its tasks use as gateway and resolver).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable

from ..api.models import IPAMPool, Network, NetworkSpec

INGRESS_NAME = "ingress"
INGRESS_SUBNET = "10.0.0.0/24"
# Docker gives the ingress network VNI 4096 and user networks the ones after it.
FIRST_VNI = 4096
LAST_VNI = (1 << 24) - 1
SMALLEST_PREFIX = 29  # a /30 leaves no room for a gateway, a VIP and a task


class IpamError(ValueError):
    """A network's addressing cannot be satisfied; the message names the field."""


def parse_subnet(value: str, field: str = "IPAM.Config.Subnet") -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise IpamError(f"{field}: invalid subnet {value!r}: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise IpamError(f"{field}: {value} is not an IPv4 subnet; overlay networks are IPv4 only here")
    if net.prefixlen > SMALLEST_PREFIX:
        raise IpamError(f"{field}: subnet {value} is too small (at most /{SMALLEST_PREFIX})")
    return net


def choose_subnet(pools: Iterable[str], size: int, taken: Iterable[str]) -> str:
    """The first /``size`` subnet of the pools that overlaps no taken subnet."""
    used = [ipaddress.ip_network(t) for t in taken]
    for pool in pools:
        base = ipaddress.ip_network(pool)
        if size < base.prefixlen:
            continue
        for candidate in base.subnets(new_prefix=size):
            if not any(candidate.overlaps(u) for u in used):
                return str(candidate)
    raise IpamError(f"IPAM.Config: no free /{size} subnet left in the address pools {', '.join(pools)}")


def check_free(subnet: ipaddress.IPv4Network, taken: Iterable[str]) -> None:
    for other in taken:
        if subnet.overlaps(ipaddress.ip_network(other)):
            raise IpamError(f"IPAM.Config.Subnet: {subnet} overlaps the subnet {other} of another network")


def choose_vni(taken: Collection[int], first: int = FIRST_VNI) -> int:
    for vni in range(first, LAST_VNI + 1):
        if vni not in taken:
            return vni
    raise IpamError("no VXLAN ID left")


def gateway_of(subnet: str) -> str:
    """The subnet's first address: reserved, as Docker reserves it, and shown as the network's gateway."""
    return str(ipaddress.ip_network(subnet).network_address + 1)


def plan_network(
    net_id: str, spec: NetworkSpec, pools: list[str], subnet_size: int, taken_subnets: Iterable[str],
    taken_vnis: Collection[int],
) -> Network:
    """A new overlay network: the subnet asked for (or the next free one of the pools) and a free VXLAN ID."""
    taken = list(taken_subnets)
    configs = (spec.IPAM.Config if spec.IPAM else None) or []
    if len(configs) > 1:
        raise IpamError("IPAM.Config: an overlay network takes one subnet")
    pool = configs[0] if configs else IPAMPool()
    if pool.Subnet:
        subnet = parse_subnet(pool.Subnet)
        check_free(subnet, taken)
        chosen = str(subnet)
    else:
        chosen = choose_subnet(pools, subnet_size, taken)
    gateway = gateway_of(chosen)
    if pool.Gateway and pool.Gateway != gateway:
        if ipaddress.ip_address(pool.Gateway) not in ipaddress.ip_network(chosen):
            raise IpamError(f"IPAM.Config.Gateway: {pool.Gateway} is not in the subnet {chosen}")
        gateway = pool.Gateway
    if pool.IPRange:
        raise IpamError("IPAM.Config.IPRange: address ranges are not supported; give a smaller Subnet instead")
    ingress_vni_free = spec.Ingress and FIRST_VNI not in taken_vnis
    vni = FIRST_VNI if ingress_vni_free else choose_vni(taken_vnis, FIRST_VNI + 1)
    return Network(ID=net_id, Spec=spec, VNI=vni, Subnet=chosen, Gateway=gateway)


class AddressBook:
    """Free addresses of one network, handed out in order from a moving cursor.

    Not reusing a just-freed address at once (Docker's serial allocation) keeps stale ARP and conntrack entries
    of a dead task from catching its successor's traffic.
    """

    def __init__(self, subnet: str, gateway: str) -> None:
        self.net = ipaddress.ip_network(subnet)
        self.reserved = {ipaddress.ip_address(gateway)}
        self.cursor = int(self.net.network_address)

    def take(self, *taken: Collection[str]) -> str:
        """The next free address after the cursor: in none of ``taken`` and not reserved."""
        first, last = int(self.net.network_address) + 1, int(self.net.broadcast_address) - 1
        span = last - first + 1
        start = self.cursor + 1
        for step in range(span):
            candidate = ipaddress.IPv4Address(first + (start - first + step) % span)
            if candidate in self.reserved or any(str(candidate) in t for t in taken):
                continue
            self.cursor = int(candidate)
            return str(candidate)
        raise IpamError(f"no free address left in the subnet {self.net}")


def with_prefix(address: str, subnet: str) -> str:
    """``10.0.1.5`` in ``10.0.1.0/24`` as ``10.0.1.5/24``, the form Docker shows addresses and VIPs in."""
    return f"{address}/{ipaddress.ip_network(subnet).prefixlen}"
