"""The routing mesh on nftables: one table the agent owns, changed one atomic transaction at a time.

Layout of `table ip swarm_mesh`:

- `prerouting` (nat, -100) and `output` (nat, -100; numeric, as nft 1.0.6 refuses `dstnat` on the output hook)
  look up `ip daddr` in the verdict map `vip_services` and, for packets to any local address,
  `meta l4proto . th dport` in `published_services`; both jump (goto) to a service chain.
- one chain `svc_<service>_vip` per service with VIPs: a VIP forwards every tcp and udp port, as Docker's do, so
  the chain DNATs the address only (the destination port stays) to a backend picked with `numgen random`.
  Other protocols do not enter it; ICMP to a VIP is answered by the node.
- one chain `svc_<service>_<proto>_<target port>` per published target port, DNATing to that port.
- a service without healthy task rejects instead (tcp reset, icmp port-unreachable for udp), so that clients see
  "connection refused" at once instead of waiting for a timeout.
- `postrouting` (nat, 100) masquerades what the mesh DNATed (see `_POSTROUTING_RULES`).
- `input` (filter, 0) drops tcp and udp to a VIP that was not DNATed (see `_INPUT_RULES`); the set
  `vip_addresses` it reads holds the keys of `vip_services` and changes in the same transactions.

Rendering is pure (state in, nft text out); `NftablesMesh` runs `nft -f -` with it. Each service chain carries
the digest of its rules in a comment, so that an agent restarting can tell from `nft -j list table` which chains
already hold what it wants and rewrite only the others.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import Backend, MeshService, MeshState

log = logging.getLogger(__name__)

FAMILY = "ip"
TABLE = "swarm_mesh"
VIP_MAP = "vip_services"
PUBLISHED_MAP = "published_services"
VIP_SET = "vip_addresses"
LOCAL_IFACES_SET = "local_backend_ifaces"
CHAIN_PREFIX = "svc_"
DIGEST_PREFIX = "swarm:"
# A packet-mark bit, set on the first packet of a connection the mesh DNATs and cleared in postrouting. It lets
# postrouting tell our DNAT from others' (Docker's published ports DNAT too) without a second lookup. Chosen
# away from kube-proxy's 0x4000 and Docker's IPVS marks.
MESH_MARK = 0x00400000

VipKey = str
"""A VIP: a key of the `vip_services` map and an element of the `vip_addresses` set."""
PublishedKey = tuple[str, int]
"""(protocol, port): a key of the `published_services` map."""

# Only tcp and udp enter a VIP's chain (the protocol is tested here, once, rather than in each of a thousand service
# chains, where every `{ tcp, udp }` would be one more anonymous set for nft to load on each transaction); other
# protocols to a VIP, ICMP above all, are the node's to answer.
_LOOKUP_RULES = (
    f"meta l4proto {{ tcp, udp }} ip daddr vmap @{VIP_MAP}",
    f"fib daddr type local meta l4proto . th dport vmap @{PUBLISHED_MAP}",
)
# The mesh answers on every node but the chosen task may run on another one. Without SNAT that task would answer
# the client directly, from its own address, and the client (expecting the address it dialled) would drop the
# reply; masquerading makes the reply come back through this node, whose conntrack undoes the DNAT.
# Connections to a VIP are always masqueraded: their clients are tasks on the same overlay as the backends, which
# would answer them directly over it. For published ports, interfaces in `local_backend_ifaces` lead to tasks
# whose gateway is this node: their replies come back through it anyway, so they keep the client's address.
_POSTROUTING_RULES = (
    f"meta mark & {MESH_MARK:#010x} == 0 return",
    f"meta mark set meta mark xor {MESH_MARK:#010x}",
    f"ct original ip daddr @{VIP_SET} masquerade fully-random",
    f"ct status dnat oifname != @{LOCAL_IFACES_SET} masquerade fully-random",
)
# VIPs are local addresses of the node (on the overlay bridges, so that it answers ARP for them). The mesh DNATs
# every tcp and udp packet to one before it is routed; what reaches input still addressed to a VIP was not (a
# VIP whose service is being removed, a packet racing a change) and must not land on one of the host's own
# sockets. Replies of DNATed connections the node itself opened to a VIP come back addressed to the VIP (their
# source) and carry the dnat status: they pass. ICMP (ping) is answered by the node.
_INPUT_RULES = (f"ip daddr @{VIP_SET} meta l4proto {{ tcp, udp }} ct status & dnat == 0 drop",)
_BASE_CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prerouting": ("type nat hook prerouting priority -100; policy accept;", _LOOKUP_RULES),
    "output": ("type nat hook output priority -100; policy accept;", _LOOKUP_RULES),
    "postrouting": ("type nat hook postrouting priority 100; policy accept;", _POSTROUTING_RULES),
    "input": ("type filter hook input priority 0; policy accept;", _INPUT_RULES),
}
_BASE_HOOKS = {"prerouting": ("nat", "prerouting", -100), "output": ("nat", "output", -100),
               "postrouting": ("nat", "postrouting", 100), "input": ("filter", "input", 0)}
_MAP_TYPES = {VIP_MAP: ["ipv4_addr"], PUBLISHED_MAP: ["inet_proto", "inet_service"]}
_SET_TYPES = {VIP_SET: "ipv4_addr", LOCAL_IFACES_SET: "ifname"}


class MeshConflict(ValueError):
    """Two services claim the same published port or the same VIP."""


class NftError(RuntimeError):
    """nft refused a transaction or a listing."""


def published_chain_name(service_id: str, proto: str, target_port: int) -> str:
    return f"{CHAIN_PREFIX}{service_id}_{proto}_{target_port}"


def vip_chain_name(service_id: str) -> str:
    # Cannot collide with a published chain, whose name ends in a port number.
    return f"{CHAIN_PREFIX}{service_id}_vip"


@dataclass(frozen=True)
class ServiceChain:
    """The rules of one service chain, without the digest comment that marks them in the kernel."""

    rules: tuple[str, ...]

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.rules).encode()).hexdigest()[:16]

    def marked_rules(self) -> tuple[str, ...]:
        first, *rest = self.rules
        return (f'{first} comment "{DIGEST_PREFIX}{self.digest}"', *rest)


def _no_backend_rules(protos: tuple[str, ...]) -> tuple[str, ...]:
    reject = {"tcp": "reject with tcp reset", "udp": "reject with icmp type port-unreachable"}
    return tuple(f"meta l4proto {proto} {reject[proto]}" for proto in protos)


def _sorted_ips(backends: tuple[Backend, ...]) -> list[str]:
    # Sorted, so that the same backends always render the same text and digest whatever order gossip gave them.
    return sorted({b.ip for b in backends}, key=socket.inet_aton)


def _dnat_target(ips: list[str]) -> str:
    if len(ips) == 1:
        return ips[0]
    choices = ", ".join(f"{i} : {ip}" for i, ip in enumerate(ips))
    return f"numgen random mod {len(ips)} map {{ {choices} }}"


# Both are cached: each apply renders every service, and all but the changed ones come back with the same backends.
@functools.lru_cache(maxsize=16384)
def published_chain(proto: str, target_port: int, backends: tuple[Backend, ...]) -> ServiceChain:
    """The chain of one published target port: DNAT to a backend's `target_port`."""
    ips = _sorted_ips(backends)
    if not ips:
        return ServiceChain(_no_backend_rules((proto,)))
    return ServiceChain((f"meta mark set meta mark or {MESH_MARK:#010x}",
                         f"meta l4proto {proto} dnat to {_dnat_target(ips)}:{target_port}"))


@functools.lru_cache(maxsize=16384)
def vip_chain(backends: tuple[Backend, ...]) -> ServiceChain:
    """The chain of a service's VIPs, entered by tcp and udp only: DNAT of the address alone, so every port
    reaches the same port of a backend."""
    ips = _sorted_ips(backends)
    if not ips:
        return ServiceChain(_no_backend_rules(("tcp", "udp")))
    return ServiceChain((f"meta mark set meta mark or {MESH_MARK:#010x}", f"dnat to {_dnat_target(ips)}"))


@dataclass
class TableContent:
    """What the service part of the table holds: chain digests, map and set elements. Comparable and diffable."""

    chains: dict[str, str | None] = field(default_factory=dict)
    """Chain name to the digest of its rules (None: unknown, e.g. a chain written by something else)."""
    vip: dict[VipKey, str] = field(default_factory=dict)
    published: dict[PublishedKey, str] = field(default_factory=dict)
    guarded: set[VipKey] = field(default_factory=set)
    """The elements of `vip_addresses`: VIPs the input chain keeps away from the host's sockets."""

    def after(self, diff: Diff) -> TableContent:
        """The content once `diff` is committed: the model of what the kernel holds after a transaction."""
        chains = {name: digest for name, digest in self.chains.items() if name not in diff.delete_chains}
        chains.update({name: body.digest for name, body in diff.write_chains.items()})
        vip = {k: v for k, v in self.vip.items() if k not in diff.delete_vip}
        vip.update(diff.add_vip)
        published = {k: v for k, v in self.published.items() if k not in diff.delete_published}
        published.update(diff.add_published)
        return TableContent(chains, vip, published, (self.guarded - diff.delete_guarded) | diff.add_guarded)


@dataclass
class DesiredTable:
    """A MeshState rendered: the service chains with their rules, and the map elements leading to them."""

    chains: dict[str, ServiceChain]
    vip: dict[VipKey, str]
    published: dict[PublishedKey, str]

    @property
    def content(self) -> TableContent:
        return TableContent({n: c.digest for n, c in self.chains.items()}, dict(self.vip), dict(self.published),
                            set(self.vip))


def render_state(desired: MeshState) -> DesiredTable:
    """Render a MeshState; raises MeshConflict if two services claim one VIP or one published port."""
    table = DesiredTable({}, {}, {})
    owners: dict[VipKey | PublishedKey, str] = {}

    def claim(key: VipKey | PublishedKey, what: str, service: MeshService, target: dict[Any, str],
              chain: str) -> None:
        owner = owners.setdefault(key, service.service_id)
        if owner != service.service_id:
            raise MeshConflict(f"services {owner} and {service.service_id} both claim {what}")
        target[key] = chain

    for service in sorted(desired.values(), key=lambda s: s.service_id):
        for frontend in service.published:
            chain = published_chain_name(service.service_id, frontend.proto, frontend.target_port)
            table.chains[chain] = published_chain(frontend.proto, frontend.target_port, service.backends)
            claim((frontend.proto, frontend.port), f"published port {frontend.proto}/{frontend.port}", service,
                  table.published, chain)
        if service.vips:
            chain = vip_chain_name(service.service_id)
            table.chains[chain] = vip_chain(service.backends)
            for vip in service.vips:
                claim(vip, f"VIP {vip}", service, table.vip, chain)
    return table


@dataclass
class Diff:
    """The changes that turn one TableContent into a DesiredTable."""

    write_chains: dict[str, ServiceChain] = field(default_factory=dict)
    new_chains: set[str] = field(default_factory=set)
    delete_chains: set[str] = field(default_factory=set)
    delete_vip: set[VipKey] = field(default_factory=set)
    add_vip: dict[VipKey, str] = field(default_factory=dict)
    delete_published: set[PublishedKey] = field(default_factory=set)
    add_published: dict[PublishedKey, str] = field(default_factory=dict)
    delete_guarded: set[VipKey] = field(default_factory=set)
    add_guarded: set[VipKey] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not (self.write_chains or self.delete_chains or self.delete_vip or self.add_vip
                    or self.delete_published or self.add_published or self.delete_guarded or self.add_guarded)

    def summary(self) -> str:
        updated = len(self.write_chains) - len(self.new_chains)
        return (f"{len(self.new_chains)} chains added, {updated} rewritten, {len(self.delete_chains)} deleted; "
                f"VIP entries -{len(self.delete_vip)} +{len(self.add_vip)}; "
                f"published entries -{len(self.delete_published)} +{len(self.add_published)}; "
                f"guarded VIPs -{len(self.delete_guarded)} +{len(self.add_guarded)}")


def diff_tables(applied: TableContent, desired: DesiredTable) -> Diff:
    diff = Diff()
    for name, body in desired.chains.items():
        if name not in applied.chains:
            diff.new_chains.add(name)
            diff.write_chains[name] = body
        elif applied.chains[name] != body.digest:
            diff.write_chains[name] = body
    diff.delete_chains = {name for name in applied.chains if name not in desired.chains}
    for old, new, delete, add in ((applied.vip, desired.vip, diff.delete_vip, diff.add_vip),
                                  (applied.published, desired.published, diff.delete_published,
                                   diff.add_published)):
        delete.update(key for key, chain in old.items() if new.get(key) != chain)
        add.update((key, chain) for key, chain in new.items() if old.get(key) != chain)
    diff.delete_guarded = applied.guarded - desired.vip.keys()
    diff.add_guarded = desired.vip.keys() - applied.guarded
    return diff


def _published_element(key: PublishedKey) -> str:
    return f"{key[0]} . {key[1]}"


def _vip_keys(vips: set[VipKey] | dict[VipKey, str]) -> list[VipKey]:
    return sorted(vips, key=socket.inet_aton)


def _vip_elements(entries: dict[VipKey, str]) -> str:
    return ", ".join(f"{vip} : goto {entries[vip]}" for vip in _vip_keys(entries))


def _published_elements(entries: dict[PublishedKey, str]) -> str:
    return ", ".join(f"{_published_element(key)} : goto {chain}" for key, chain in sorted(entries.items()))


def _ifaces(local_ifaces: Sequence[str]) -> str:
    return ", ".join(json.dumps(name) for name in sorted(set(local_ifaces)))


def full_script(desired: DesiredTable, local_ifaces: Sequence[str] = ()) -> str:
    """The whole table from scratch, replacing any previous one in the same (atomic) transaction."""
    out = [f"table {FAMILY} {TABLE} {{}}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{"]

    def collection(kind: str, name: str, keytype: str, elements: str) -> None:
        out.append(f"\t{kind} {name} {{\n\t\ttype {keytype}")
        if elements:
            out.append(f"\t\telements = {{ {elements} }}")
        out.append("\t}")

    collection("map", VIP_MAP, "ipv4_addr : verdict", _vip_elements(desired.vip))
    collection("map", PUBLISHED_MAP, "inet_proto . inet_service : verdict", _published_elements(desired.published))
    collection("set", VIP_SET, "ipv4_addr", ", ".join(_vip_keys(desired.vip)))
    collection("set", LOCAL_IFACES_SET, "ifname", _ifaces(local_ifaces))
    for name, (hook, rules) in _BASE_CHAINS.items():
        out.append(f"\tchain {name} {{\n\t\t{hook}")
        out.extend(f"\t\t{rule}" for rule in rules)
        out.append("\t}")
    for name, body in sorted(desired.chains.items()):
        out.append(f"\tchain {name} {{")
        out.extend(f"\t\t{rule}" for rule in body.marked_rules())
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def diff_script(diff: Diff, rewrite_base: Sequence[str] | None = None) -> str:
    """One transaction applying `diff`; with `rewrite_base` (the local interfaces), also rewrite the base chains.

    Order matters inside the transaction: chains exist before elements jump to them, and elements leave before
    the chains they jump to are deleted.
    """
    t = f"{FAMILY} {TABLE}"
    out: list[str] = []
    if rewrite_base is not None:
        for name, (_, rules) in _BASE_CHAINS.items():
            out.append(f"flush chain {t} {name}")
            out.extend(f"add rule {t} {name} {rule}" for rule in rules)
        out.append(f"flush set {t} {LOCAL_IFACES_SET}")
        if rewrite_base:
            out.append(f"add element {t} {LOCAL_IFACES_SET} {{ {_ifaces(rewrite_base)} }}")
    for name, body in sorted(diff.write_chains.items()):
        out.append(f"{'add' if name in diff.new_chains else 'flush'} chain {t} {name}")
        out.extend(f"add rule {t} {name} {rule}" for rule in body.marked_rules())
    if diff.delete_vip:
        out.append(f"delete element {t} {VIP_MAP} {{ {', '.join(_vip_keys(diff.delete_vip))} }}")
    if diff.delete_guarded:
        out.append(f"delete element {t} {VIP_SET} {{ {', '.join(_vip_keys(diff.delete_guarded))} }}")
    if diff.delete_published:
        out.append(f"delete element {t} {PUBLISHED_MAP} "
                   f"{{ {', '.join(_published_element(k) for k in sorted(diff.delete_published))} }}")
    if diff.add_vip:
        out.append(f"add element {t} {VIP_MAP} {{ {_vip_elements(diff.add_vip)} }}")
    if diff.add_guarded:
        out.append(f"add element {t} {VIP_SET} {{ {', '.join(_vip_keys(diff.add_guarded))} }}")
    if diff.add_published:
        out.append(f"add element {t} {PUBLISHED_MAP} {{ {_published_elements(diff.add_published)} }}")
    out.extend(f"delete chain {t} {name}" for name in sorted(diff.delete_chains))
    return "\n".join(out) + "\n"


def _goto_target(verdict: Any) -> str | None:
    if isinstance(verdict, dict):
        jump = verdict.get("goto") or verdict.get("jump")
        if isinstance(jump, dict):
            return jump.get("target")
    return None


def parse_listing(listing: dict[str, Any]) -> tuple[TableContent, bool]:
    """Read `nft -j list table` output: the service content, and whether the table has the layout we render."""
    content = TableContent()
    maps: dict[str, list[str]] = {}
    sets: dict[str, Any] = {}
    base: dict[str, tuple[str, str, int]] = {}
    for obj in listing.get("nftables", []):
        if "map" in obj:
            m = obj["map"]
            if m.get("map") == "verdict":
                maps[m["name"]] = m["type"] if isinstance(m["type"], list) else [m["type"]]
            for key, verdict in m.get("elem", []):
                target = _goto_target(verdict)
                if target is None:
                    continue
                parts = key.get("concat") if isinstance(key, dict) else None
                if m["name"] == VIP_MAP and isinstance(key, str):
                    content.vip[key] = target
                elif m["name"] == PUBLISHED_MAP and parts is not None and len(parts) == 2:
                    content.published[(str(parts[0]), int(parts[1]))] = target
        elif "set" in obj:
            nft_set = obj["set"]
            sets[nft_set["name"]] = nft_set["type"]
            if nft_set["name"] == VIP_SET:
                content.guarded.update(e for e in nft_set.get("elem", []) if isinstance(e, str))
        elif "chain" in obj:
            c = obj["chain"]
            if "hook" in c:
                base[c["name"]] = (c.get("type"), c["hook"], c.get("prio"))
            elif c["name"].startswith(CHAIN_PREFIX):
                content.chains.setdefault(c["name"], None)
        elif "rule" in obj:
            r = obj["rule"]
            comment = r.get("comment", "")
            if r["chain"] in content.chains and comment.startswith(DIGEST_PREFIX):
                content.chains[r["chain"]] = comment[len(DIGEST_PREFIX):]
    layout_ok = maps == _MAP_TYPES and sets == _SET_TYPES and base == _BASE_HOOKS
    return content, layout_ok


def normalised_listing(listing: dict[str, Any]) -> dict[str, Any]:
    """`nft -j list table` output without kernel handles and with set elements sorted: two tables holding the
    same rules compare equal however they were built."""
    out: dict[str, Any] = {}
    for obj in listing.get("nftables", []):
        for kind in ("table", "map", "set", "chain", "rule"):
            if kind not in obj:
                continue
            item = {k: v for k, v in obj[kind].items() if k != "handle"}
            if "elem" in item:
                item["elem"] = sorted(item["elem"], key=lambda e: json.dumps(e, sort_keys=True))
            if kind == "rule":
                out.setdefault(f"rules:{item['chain']}", []).append(item)
            else:
                out[f"{kind}:{item['name']}"] = item
    return out


class NftablesMesh:
    """The mesh backend on nftables; owns `table ip swarm_mesh` and nothing else.

    `command` is how to run nft (e.g. prefixed by `ip netns exec NS`); `local_backend_ifaces` are the
    interfaces to local tasks whose gateway is this node (see `_POSTROUTING_RULES`).
    """

    name = "nftables"

    def __init__(self, command: Sequence[str] = ("nft",), local_backend_ifaces: Sequence[str] = ()) -> None:
        self._command = tuple(command)
        self._local_ifaces = tuple(local_backend_ifaces)
        self._applied: TableContent | None = None

    def _nft(self, *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._command, *args], input=script, capture_output=True, text=True, check=False)

    def _commit(self, script: str, what: str) -> None:
        started = time.monotonic()
        done = self._nft("-f", "-", script=script)
        if done.returncode != 0:
            raise NftError(f"nft refused the {what} of table {FAMILY} {TABLE}: {done.stderr.strip()}")
        log.debug("nft committed the %s of table %s %s in %.1f ms (%d lines)", what, FAMILY, TABLE,
                  (time.monotonic() - started) * 1000, script.count("\n"))

    def listing(self) -> dict[str, Any] | None:
        """The table as `nft -j list table` gives it, or None if there is no such table."""
        done = self._nft("-j", "list", "table", FAMILY, TABLE)
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise NftError(f"nft could not list table {FAMILY} {TABLE}: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def full(self, desired: MeshState) -> None:
        """Replace the table with one rendered from scratch, in one transaction."""
        table = render_state(desired)
        self._applied = None
        self._commit(full_script(table, self._local_ifaces), "full rebuild")
        self._applied = table.content
        log.info("mesh table %s %s rebuilt: %d services, %d service chains", FAMILY, TABLE, len(desired),
                 len(table.chains))

    def apply(self, desired: MeshState) -> None:
        """Converge to `desired` with one transaction touching only what changed since the last apply."""
        if self._applied is None:
            self.full(desired)
            return
        table = render_state(desired)
        diff = diff_tables(self._applied, table)
        if diff.empty:
            log.debug("mesh table %s %s already matches the desired state", FAMILY, TABLE)
            return
        try:
            self._commit(diff_script(diff), "incremental update")
        except NftError as exc:
            # Someone changed or deleted our table behind our back: what we believe applied is wrong, so rebuild.
            log.warning("incremental mesh update failed (%s); rebuilding the table", exc)
            self.full(desired)
            return
        self._applied = self._applied.after(diff)
        log.info("mesh table %s %s updated: %s", FAMILY, TABLE, diff.summary())

    def reconcile_on_start(self, desired: MeshState) -> None:
        """Adopt the table a previous agent left (it keeps serving meanwhile) and converge it in one transaction.

        Chains whose digest comment matches the desired rules stay untouched; base chains are rewritten in the
        same transaction so that a newer agent's base rules take effect. A table of another layout is replaced
        atomically by a full rebuild.
        """
        listing = self.listing()
        if listing is None:
            log.info("no mesh table %s %s found at start; building it", FAMILY, TABLE)
            self.full(desired)
            return
        applied, layout_ok = parse_listing(listing)
        if not layout_ok:
            log.warning("mesh table %s %s found at start has another layout; replacing it", FAMILY, TABLE)
            self.full(desired)
            return
        table = render_state(desired)
        diff = diff_tables(applied, table)
        self._applied = None
        self._commit(diff_script(diff, rewrite_base=self._local_ifaces), "reconciliation at start")
        self._applied = applied.after(diff)
        log.info("mesh table %s %s adopted at start (%d service chains found): %s", FAMILY, TABLE,
                 len(applied.chains), diff.summary())

    def remove(self) -> None:
        """Delete the table (the node leaves the swarm)."""
        self._applied = None
        if self.listing() is not None:
            self._commit(f"delete table {FAMILY} {TABLE}\n", "removal")
            log.info("mesh table %s %s removed", FAMILY, TABLE)
