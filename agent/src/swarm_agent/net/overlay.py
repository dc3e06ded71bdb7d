"""An overlay network on one node: a Linux bridge its tasks sit on, joined to the other nodes by VXLAN.

The bridge is a user-defined network of the node's own Docker engine (driver ``bridge``), named like the
swarm network, on the network's whole subnet, with this node's own address of the network as its gateway.
So Docker still creates the containers' interfaces, gives them the addresses the managers allocated, and runs
its embedded DNS for them (which forwards to the resolver on the gateway address). Then:

- a VXLAN device (the network's VNI, UDP 4789, learning) is a port of the bridge, with one all-zeros FDB
  entry per remote node that has the network, so broadcasts (ARP) reach every peer and unicast learns
  where each MAC lives: one layer-2 segment across the nodes, as Docker's overlay is;
- the VIPs of the network's services are /32 addresses of the bridge, so this node answers ARP for them
  and the routing mesh (nftables) takes the packets; a bridge-family nftables table keeps ARP for VIPs
  from crossing the VXLAN ports, so each node answers its own tasks only;
- isolation between overlay networks is Docker's own (its bridges cannot reach each other), and
  ``Internal`` networks are Docker internal networks (no way out).

Everything is idempotent and read back from the kernel, so an agent restarting adopts what it finds.
"""
from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import docker
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
LABEL_NETWORK_ID = "com.docker.swarm.network.id"
BRIDGE_PREFIX = "sw-"
VXLAN_PREFIX = "vx-"
ARP_TABLE = "swarm_overlay"
FLOOD_MAC = "00:00:00:00:00:00"


def bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[:12]


def vxlan_name(network_id: str) -> str:
    return VXLAN_PREFIX + network_id[:12]


@dataclass(frozen=True)
class LocalNetwork:
    """What a node needs to build one overlay network: from the managers' attachment for this node."""

    network_id: str
    name: str
    vni: int
    subnet: str
    internal: bool
    address: str  # this node's own address on the network, without prefix

    @classmethod
    def from_attachment(cls, network: dict[str, Any], address: str) -> LocalNetwork:
        spec = network["Spec"]
        config = network["IPAMOptions"]["Configs"][0]
        vni = int(network["DriverState"]["Options"]["com.docker.network.driver.overlay.vxlanid_list"])
        return cls(network["ID"], spec["Name"], vni, config["Subnet"], bool(spec.get("Internal")),
                   address.split("/")[0])


class OverlayError(RuntimeError):
    pass


class Overlay:
    """The overlay networks of this node; ``underlay_ip`` is the node's address other nodes reach it at."""

    def __init__(self, docker_url: str, underlay_ip: str, nft_command: Sequence[str] = ("nft",)) -> None:
        self._api = docker.APIClient(base_url=docker_url, version="1.41")
        self.underlay_ip = underlay_ip
        self._nft = tuple(nft_command)
        self._ipr = IPRoute()
        self._arp_table_ready = False
        self._arp_members: dict[str, set[str]] = {}

    def close(self) -> None:
        self._ipr.close()
        self._api.close()

    # ------------------------------------------------------------ devices

    def _index(self, ifname: str) -> int | None:
        found = self._ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def _underlay_mtu(self) -> int:
        for addr in self._ipr.get_addr(address=self.underlay_ip):
            link = self._ipr.get_links(addr["index"])[0]
            return int(link.get("IFLA_MTU") or link.get_attr("IFLA_MTU"))
        raise OverlayError(f"no interface holds the underlay address {self.underlay_ip}")

    def _named(self, name: str) -> dict[str, Any] | None:
        """The engine's network called exactly ``name`` (the engine's name filter also matches parts of names)."""
        return next((n for n in self._api.networks(names=[name]) if n.get("Name") == name), None)

    def _docker_network(self, net: LocalNetwork) -> dict[str, Any] | None:
        candidate = self._named(net.name)
        if candidate is not None and (candidate.get("Labels") or {}).get(LABEL_NETWORK_ID) != net.network_id:
            raise OverlayError(
                f"the engine already has a network named {net.name} that is not swarm network {net.network_id}"
            )
        return candidate

    def ensure(self, net: LocalNetwork) -> str:
        """Build (or adopt) the network here; returns the engine's network name to attach containers to."""
        mtu = self._underlay_mtu() - VXLAN_OVERHEAD
        existing = self._docker_network(net)
        if existing is not None:
            config = ((existing.get("IPAM") or {}).get("Config") or [{}])[0]
            if config.get("Subnet") != net.subnet or config.get("Gateway") != net.address:
                raise OverlayError(
                    f"engine network {net.name} has subnet {config.get('Subnet')} gateway {config.get('Gateway')}, "
                    f"expected {net.subnet} gateway {net.address}; remove it"
                )
        else:
            self._api.create_network(
                net.name,
                driver="bridge",
                options={
                    "com.docker.network.bridge.name": bridge_name(net.network_id),
                    "com.docker.network.driver.mtu": str(mtu),
                },
                ipam=docker.types.IPAMConfig(
                    pool_configs=[docker.types.IPAMPool(subnet=net.subnet, gateway=net.address)]
                ),
                internal=net.internal,
                labels={LABEL_NETWORK_ID: net.network_id},
                check_duplicate=True,
            )
            log.info("overlay network %s (%s): engine network created on bridge %s, subnet %s, address %s",
                     net.name, net.network_id, bridge_name(net.network_id), net.subnet, net.address)
        bridge = self._index(bridge_name(net.network_id))
        if bridge is None:
            # Docker creates the bridge device lazily on some versions: it exists once the network does.
            raise OverlayError(f"bridge {bridge_name(net.network_id)} of network {net.name} is missing")
        self._ipr.link("set", index=bridge, state="up")
        # The node routes between a task and a VIP's backend on the same bridge: it must not tell the task
        # to go around it (an ICMP redirect would bypass the mesh).
        _sysctl(f"net/ipv4/conf/{bridge_name(net.network_id)}/send_redirects", "0")
        self._ensure_vxlan(net, bridge, mtu)
        self._ensure_arp_filter()
        return net.name

    def _ensure_vxlan(self, net: LocalNetwork, bridge: int, mtu: int) -> None:
        name = vxlan_name(net.network_id)
        index = self._index(name)
        if index is not None:
            link = self._ipr.get_links(index)[0]
            info = link.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info else None
            if data is None or data.get_attr("IFLA_VXLAN_ID") != net.vni or \
                    data.get_attr("IFLA_VXLAN_LOCAL") != self.underlay_ip:
                log.warning("overlay network %s: replacing VXLAN device %s of another VNI or address", net.name, name)
                self._ipr.link("del", index=index)
                index = None
        if index is None:
            self._ipr.link("add", ifname=name, kind="vxlan", vxlan_id=net.vni, vxlan_port=VXLAN_PORT,
                           vxlan_local=self.underlay_ip, vxlan_learning=1, mtu=mtu)
            index = self._index(name)
            log.info("overlay network %s: VXLAN device %s (VNI %d) created", net.name, name, net.vni)
        self._ipr.link("set", index=index, master=bridge, state="up")

    def remove(self, network_id: str, name: str) -> None:
        """Take the network down here (no task of this node uses it any more)."""
        index = self._index(vxlan_name(network_id))
        if index is not None:
            self._ipr.link("del", index=index)
        candidate = self._named(name)
        if candidate is not None and (candidate.get("Labels") or {}).get(LABEL_NETWORK_ID) == network_id:
            self._api.remove_network(candidate["Id"])
        log.info("overlay network %s (%s) removed from this node", name, network_id)

    def local_networks(self) -> dict[str, str]:
        """Swarm networks built on this node: network ID -> engine network name."""
        found = self._api.networks(filters={"label": [LABEL_NETWORK_ID]})
        return {n["Labels"][LABEL_NETWORK_ID]: n["Name"] for n in found}

    # ------------------------------------------------------------ peers

    def set_peers(self, network_id: str, peers: Iterable[str]) -> None:
        """Flood entries towards exactly ``peers`` (the other nodes' underlay addresses that have the network)."""
        index = self._index(vxlan_name(network_id))
        if index is None:
            return
        want = {p for p in peers if p != self.underlay_ip}
        entries = [(e.get_attr("NDA_LLADDR"), e.get_attr("NDA_DST")) for e in self._ipr.fdb("dump", ifindex=index)]
        have = {dst for mac, dst in entries if dst and mac == FLOOD_MAC}
        for peer in sorted(want - have):
            self._ipr.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=peer)
        # A peer that left takes its learned entries along: frames for its tasks' MACs must not keep
        # going to a node that is gone until they age out.
        for mac, dst in entries:
            if dst in have - want:
                self._ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)
        if want != have:
            log.info("overlay network %s: peers +%s -%s", network_id[:12], sorted(want - have), sorted(have - want))

    # ------------------------------------------------------------- VIPs

    def set_vips(self, network_id: str, vips: Iterable[str]) -> None:
        """Hold exactly these VIPs (/32) on the network's bridge, and keep ARP for them off the VXLAN ports."""
        index = self._index(bridge_name(network_id))
        if index is None:
            return
        want = set(vips)
        have = {a.get_attr("IFA_ADDRESS") for a in self._ipr.get_addr(index=index) if a["prefixlen"] == 32}
        for vip in sorted(want - have):
            try:
                self._ipr.addr("add", index=index, address=vip, prefixlen=32)
            except NetlinkError as exc:
                if exc.code != 17:  # EEXIST: raced with ourselves on restart
                    raise
        for vip in sorted(have - want):
            self._ipr.addr("del", index=index, address=vip, prefixlen=32)
        self._arp_vips(network_id, want)

    def _ensure_arp_filter(self) -> None:
        if self._arp_table_ready:
            return
        script = (
            f"table bridge {ARP_TABLE} {{\n"
            f"\tset vips {{ type ipv4_addr; }}\n"
            f"\tchain forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n"
            f'\t\toifname "{VXLAN_PREFIX}*" ether type arp arp daddr ip @vips drop\n'
            f'\t\tiifname "{VXLAN_PREFIX}*" ether type arp arp daddr ip @vips drop\n'
            f"\t}}\n}}\n"
        )
        # Recreated from scratch: the set is refilled by set_vips for every network right after.
        self._run_nft(f"table bridge {ARP_TABLE} {{}}\ndelete table bridge {ARP_TABLE}\n" + script)
        self._arp_table_ready = True
        self._arp_members = {}

    def _arp_vips(self, network_id: str, vips: set[str]) -> None:
        self._ensure_arp_filter()
        old = self._arp_members.get(network_id, set())
        lines = []
        if old - vips:
            lines.append(f"delete element bridge {ARP_TABLE} vips {{ {', '.join(sorted(old - vips))} }}")
        if vips - old:
            lines.append(f"add element bridge {ARP_TABLE} vips {{ {', '.join(sorted(vips - old))} }}")
        if lines:
            self._run_nft("\n".join(lines) + "\n")
        self._arp_members[network_id] = set(vips)

    def _run_nft(self, script: str) -> None:
        done = subprocess.run([*self._nft, "-f", "-"], input=script, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise OverlayError(f"nft refused the overlay ARP filter: {done.stderr.strip()}")


def _sysctl(path: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except OSError as exc:  # a read-only /proc/sys (some containers): the network works, less tidily
        log.warning("could not set %s to %s: %s", path.replace("/", "."), value, exc)
