"""The routing mesh on nftables: one table the agent owns, changed one atomic transaction at a time.

Layout of `table ip swarm_mesh`:

- `prerouting` (nat, -100) and `output` (nat, -100; numeric, as nft 1.0.6 refuses `dstnat` on the output hook)
  look up `ip daddr . meta l4proto . th dport` in the verdict map `vip_services` and, for packets to any local
  address, `meta l4proto . th dport` in `published_services`; both jump (goto) to a service chain.
- one chain `svc_<service>_<proto>_<target port>` per service and target port, which picks a backend with
  `numgen random` and DNATs to it, or rejects when the service has no healthy task, so that clients see
  "connection refused" at once instead of waiting for a timeout.
- `postrouting` (nat, 100) masquerades what the mesh DNATed (see `_POSTROUTING_RULES`).

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
LOCAL_IFACES_SET = "local_backend_ifaces"
CHAIN_PREFIX = "svc_"
DIGEST_PREFIX = "swarm:"
# A packet-mark bit, set on the first packet of a connection the mesh DNATs and cleared in postrouting. It lets
# postrouting tell our DNAT from others' (Docker's published ports DNAT too) without a second lookup. Chosen
# away from kube-proxy's 0x4000 and Docker's IPVS marks.
MESH_MARK = 0x00400000

VipKey = tuple[str, str, int]
"""(VIP, protocol, port): a key of the `vip_services` map."""
PublishedKey = tuple[str, int]
"""(protocol, port): a key of the `published_services` map."""

_LOOKUP_RULES = (
    f"ip daddr . meta l4proto . th dport vmap @{VIP_MAP}",
    f"fib daddr type local meta l4proto . th dport vmap @{PUBLISHED_MAP}",
)
# The mesh answers on every node but the chosen task may run on another one. Without SNAT that task would answer
# the client directly, from its own address, and the client (expecting the address it dialled) would drop the
# reply; masquerading makes the reply come back through this node, whose conntrack undoes the DNAT. Interfaces in
# `local_backend_ifaces` lead to tasks whose gateway is this node: their replies come back through it anyway,
# so they keep the client's address.
_POSTROUTING_RULES = (
    f"meta mark & {MESH_MARK:#010x} == 0 return",
    f"meta mark set meta mark xor {MESH_MARK:#010x}",
    f"ct status dnat oifname != @{LOCAL_IFACES_SET} masquerade fully-random",
)
_BASE_CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prerouting": ("type nat hook prerouting priority -100; policy accept;", _LOOKUP_RULES),
    "output": ("type nat hook output priority -100; policy accept;", _LOOKUP_RULES),
    "postrouting": ("type nat hook postrouting priority 100; policy accept;", _POSTROUTING_RULES),
}
_BASE_HOOKS = {"prerouting": ("prerouting", -100), "output": ("output", -100), "postrouting": ("postrouting", 100)}
_MAP_TYPES = {
    VIP_MAP: ["ipv4_addr", "inet_proto", "inet_service"],
    PUBLISHED_MAP: ["inet_proto", "inet_service"],
}


class MeshConflict(ValueError):
    """Two services claim the same published port or the same VIP and port."""


class NftError(RuntimeError):
    """nft refused a transaction or a listing."""


def chain_name(service_id: str, proto: str, target_port: int) -> str:
    return f"{CHAIN_PREFIX}{service_id}_{proto}_{target_port}"


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


@functools.lru_cache(maxsize=16384)
def service_chain(proto: str, target_port: int, backends: tuple[Backend, ...]) -> ServiceChain:
    # Cached: each apply renders every service, and all but the changed ones come back with the same backends.
    # Sorted, so that the same backends always render the same text and digest whatever order gossip gave them.
    ips = sorted({b.ip for b in backends}, key=socket.inet_aton)
    if not ips:
        reject = "reject with tcp reset" if proto == "tcp" else "reject with icmp type port-unreachable"
        return ServiceChain((f"meta l4proto {proto} {reject}",))
    if len(ips) == 1:
        target = f"{ips[0]}:{target_port}"
    else:
        choices = ", ".join(f"{i} : {ip}" for i, ip in enumerate(ips))
        target = f"numgen random mod {len(ips)} map {{ {choices} }} : {target_port}"
    return ServiceChain((f"meta mark set meta mark or {MESH_MARK:#010x}", f"meta l4proto {proto} dnat to {target}"))


@dataclass
class TableContent:
    """What the service part of the table holds: chain digests and map elements. Comparable and diffable."""

    chains: dict[str, str | None] = field(default_factory=dict)
    """Chain name to the digest of its rules (None: unknown, e.g. a chain written by something else)."""
    vip: dict[VipKey, str] = field(default_factory=dict)
    published: dict[PublishedKey, str] = field(default_factory=dict)

    def after(self, diff: Diff) -> TableContent:
        """The content once `diff` is committed: the model of what the kernel holds after a transaction."""
        chains = {name: digest for name, digest in self.chains.items() if name not in diff.delete_chains}
        chains.update({name: body.digest for name, body in diff.write_chains.items()})
        vip = {k: v for k, v in self.vip.items() if k not in diff.delete_vip}
        vip.update(diff.add_vip)
        published = {k: v for k, v in self.published.items() if k not in diff.delete_published}
        published.update(diff.add_published)
        return TableContent(chains, vip, published)


@dataclass
class DesiredTable:
    """A MeshState rendered: the service chains with their rules, and the map elements leading to them."""

    chains: dict[str, ServiceChain]
    vip: dict[VipKey, str]
    published: dict[PublishedKey, str]

    @property
    def content(self) -> TableContent:
        return TableContent({n: c.digest for n, c in self.chains.items()}, dict(self.vip), dict(self.published))


def render_state(desired: MeshState) -> DesiredTable:
    """Render a MeshState; raises MeshConflict if two services claim one map key."""
    table = DesiredTable({}, {}, {})
    owners: dict[VipKey | PublishedKey, str] = {}

    def claim(key: VipKey | PublishedKey, service: MeshService, target: dict[Any, str], chain: str) -> None:
        owner = owners.setdefault(key, service.service_id)
        if owner != service.service_id:
            raise MeshConflict(f"services {owner} and {service.service_id} both claim {'/'.join(map(str, key))}")
        target[key] = chain

    for service in sorted(desired.values(), key=lambda s: s.service_id):
        for frontend in service.published:
            chain = chain_name(service.service_id, frontend.proto, frontend.target_port)
            table.chains[chain] = service_chain(frontend.proto, frontend.target_port, service.backends)
            claim((frontend.proto, frontend.port), service, table.published, chain)
        for frontend in service.vip_ports:
            if not service.vips:
                continue
            chain = chain_name(service.service_id, frontend.proto, frontend.target_port)
            table.chains[chain] = service_chain(frontend.proto, frontend.target_port, service.backends)
            for vip in service.vips:
                claim((vip, frontend.proto, frontend.port), service, table.vip, chain)
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

    @property
    def empty(self) -> bool:
        return not (self.write_chains or self.delete_chains or self.delete_vip or self.add_vip
                    or self.delete_published or self.add_published)

    def summary(self) -> str:
        updated = len(self.write_chains) - len(self.new_chains)
        return (f"{len(self.new_chains)} chains added, {updated} rewritten, {len(self.delete_chains)} deleted; "
                f"VIP entries -{len(self.delete_vip)} +{len(self.add_vip)}; "
                f"published entries -{len(self.delete_published)} +{len(self.add_published)}")


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
    return diff


def _vip_element(key: VipKey) -> str:
    return f"{key[0]} . {key[1]} . {key[2]}"


def _published_element(key: PublishedKey) -> str:
    return f"{key[0]} . {key[1]}"


def _elements(entries: dict[Any, str], render: Any) -> str:
    return ", ".join(f"{render(k)} : goto {chain}" for k, chain in sorted(entries.items()))


def _ifaces(local_ifaces: Sequence[str]) -> str:
    return ", ".join(json.dumps(name) for name in sorted(set(local_ifaces)))


def full_script(desired: DesiredTable, local_ifaces: Sequence[str] = ()) -> str:
    """The whole table from scratch, replacing any previous one in the same (atomic) transaction."""
    out = [f"table {FAMILY} {TABLE} {{}}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{"]
    for name, keytype, entries, render in ((VIP_MAP, "ipv4_addr . inet_proto . inet_service", desired.vip,
                                            _vip_element),
                                           (PUBLISHED_MAP, "inet_proto . inet_service", desired.published,
                                            _published_element)):
        out.append(f"\tmap {name} {{\n\t\ttype {keytype} : verdict")
        if entries:
            out.append(f"\t\telements = {{ {_elements(entries, render)} }}")
        out.append("\t}")
    out.append(f"\tset {LOCAL_IFACES_SET} {{\n\t\ttype ifname")
    if local_ifaces:
        out.append(f"\t\telements = {{ {_ifaces(local_ifaces)} }}")
    out.append("\t}")
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
    for keys, map_name, render in ((diff.delete_vip, VIP_MAP, _vip_element),
                                   (diff.delete_published, PUBLISHED_MAP, _published_element)):
        if keys:
            out.append(f"delete element {t} {map_name} {{ {', '.join(render(k) for k in sorted(keys))} }}")
    for entries, map_name, render in ((diff.add_vip, VIP_MAP, _vip_element),
                                      (diff.add_published, PUBLISHED_MAP, _published_element)):
        if entries:
            out.append(f"add element {t} {map_name} {{ {_elements(entries, render)} }}")
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
    sets: set[str] = set()
    base: dict[str, tuple[str, int]] = {}
    for obj in listing.get("nftables", []):
        if "map" in obj:
            m = obj["map"]
            if m.get("map") == "verdict":
                maps[m["name"]] = m["type"] if isinstance(m["type"], list) else [m["type"]]
            for key, verdict in m.get("elem", []):
                target = _goto_target(verdict)
                parts = key.get("concat") if isinstance(key, dict) else None
                if target is None or parts is None:
                    continue
                if m["name"] == VIP_MAP and len(parts) == 3:
                    content.vip[(str(parts[0]), str(parts[1]), int(parts[2]))] = target
                elif m["name"] == PUBLISHED_MAP and len(parts) == 2:
                    content.published[(str(parts[0]), int(parts[1]))] = target
        elif "set" in obj:
            sets.add(obj["set"]["name"])
        elif "chain" in obj:
            c = obj["chain"]
            if "hook" in c:
                base[c["name"]] = (c["hook"], c.get("prio"))
            elif c["name"].startswith(CHAIN_PREFIX):
                content.chains.setdefault(c["name"], None)
        elif "rule" in obj:
            r = obj["rule"]
            comment = r.get("comment", "")
            if r["chain"] in content.chains and comment.startswith(DIGEST_PREFIX):
                content.chains[r["chain"]] = comment[len(DIGEST_PREFIX):]
    layout_ok = maps == _MAP_TYPES and LOCAL_IFACES_SET in sets and base == _BASE_HOOKS
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
