"""The node's data plane: overlay networks, gossip, the routing mesh and the service resolver, kept in step.

Inputs: the networks the managers gave this node an address on (with its assignments), the node's own
running tasks, and what gossip says about everybody else's (``endpoints``). Outputs, converged by one loop
whenever an input changes: the overlay devices and their peers, the VIPs on each bridge, the mesh table and
the resolver's names. Kernel and engine calls run in a worker thread, one at a time.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..api.models import ServiceEndpoint, Task
from .dns import ServiceResolver
from .endpoints import (
    ENDPOINTS,
    PEERS,
    NameTable,
    endpoint_value,
    mesh_state,
    parse_all,
    peers_by_network,
    vips_by_network,
)
from .gossip import Gossip
from .mesh.select import MeshBackend
from .overlay import LocalNetwork, Overlay

log = logging.getLogger(__name__)

# A task leaving is withdrawn from the mesh and DNS this long before its container is stopped, so that every
# node has heard of it (gossip spreads an update in a few gossip intervals).
DRAIN_SECONDS = 1.0


class DataPlane:
    def __init__(self, node_id: str, overlay: Overlay, gossip: Gossip, mesh: MeshBackend,
                 resolver: ServiceResolver) -> None:
        self.node_id = node_id
        self.overlay = overlay
        self.gossip = gossip
        self.mesh = mesh
        self.resolver = resolver
        self.names = NameTable([])
        self._wanted: dict[str, LocalNetwork] = {}
        self._ingress_id: str | None = None
        self._built: dict[str, LocalNetwork] = {}
        self._listening: dict[str, str] = {}
        self._published: dict[str, dict[str, Any]] = {}
        self._dirty = asyncio.Event()
        self._io = asyncio.Lock()
        self._mesh_adopted = False
        # Until the session has looked at its containers once, an entry of ours we did not publish in this
        # run may still be a running task (the agent restarted): keep it.
        self._tasks_known = False
        gossip.on_entry(lambda table, key, value: self._dirty.set())

    # ------------------------------------------------------------ inputs

    def set_networks(self, attachments: list[Mapping[str, Any]]) -> None:
        """This node's networks from its assignments: ``[{"Network": <swarm network>, "Address": ip}]``."""
        wanted = {}
        for item in attachments:
            net = LocalNetwork.from_attachment(item["Network"], item["Address"])
            wanted[net.network_id] = net
            if item["Network"]["Spec"].get("Ingress"):
                self._ingress_id = net.network_id
        if wanted != self._wanted:
            self._wanted = wanted
            self._dirty.set()

    async def prepare(self, task: Task) -> list[tuple[str, str, list[str]]] | None:
        """The engine networks, addresses and aliases to start ``task`` with, building its networks first;
        None while this node has no address on one of them yet (the managers are still allocating it)."""
        plan = []
        for attachment in task.NetworksAttachments or []:
            net = self._wanted.get(attachment.Network["ID"])
            if net is None:
                return None
            await self._build(net)
            plan.append((net.name, attachment.Addresses[0].split("/")[0], list(attachment.Aliases or [])))
        return plan

    def resolver_addresses(self, task: Task) -> list[str]:
        """The node's addresses on the task's networks, where its resolver answers the task."""
        nets = [self._wanted.get(a.Network["ID"]) for a in task.NetworksAttachments or []]
        return [n.address for n in nets if n is not None]

    def publish(self, task: Task, service_name: str, endpoint: ServiceEndpoint | None) -> None:
        """``task`` runs (and is healthy) here: its addresses join the mesh and DNS of every node."""
        if not task.NetworksAttachments:
            return
        value = endpoint_value(task, service_name, endpoint)
        if self._published.get(task.ID) != value:
            self._published[task.ID] = value
            self.gossip.put(ENDPOINTS, task.ID, value)
            log.info("task %s (%s) published on %d networks", task.ID, task.Name, len(value["networks"]))

    def withdraw(self, task_id: str) -> bool:
        """Take a task out of the mesh and DNS; True if it was in."""
        if self._published.pop(task_id, None) is None:
            return False
        self.gossip.delete(ENDPOINTS, task_id)
        log.info("task %s withdrawn from the mesh and DNS", task_id)
        return True

    def tasks_known(self) -> None:
        """The session has published every task of ours that runs: entries of ours beyond those are stale."""
        if not self._tasks_known:
            self._tasks_known = True
            self._dirty.set()

    # ------------------------------------------------------------ converge

    async def run(self) -> None:
        await self._adopt()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.converge()
            except Exception:
                log.exception("node %s: data plane convergence failed; retrying", self.node_id)
                await asyncio.sleep(1)
                self._dirty.set()
            await asyncio.sleep(0.05)  # a burst of gossip updates is applied once

    async def _adopt(self) -> None:
        """Keep serving what a previous agent left, and own the networks and tasks it had published."""
        async with self._io:
            local = await asyncio.to_thread(self.overlay.local_networks)
        log.info("node %s: data plane starts with %d overlay networks in place", self.node_id, len(local))
        self._dirty.set()

    async def _build(self, net: LocalNetwork) -> None:
        if self._built.get(net.network_id) == net:
            return
        async with self._io:
            await asyncio.to_thread(self.overlay.ensure, net)
        self._built[net.network_id] = net
        self.gossip.put(PEERS, f"{net.network_id}/{self.node_id}", {"addr": self.overlay.underlay_ip})
        self._dirty.set()

    async def converge(self) -> None:
        for net in list(self._wanted.values()):
            await self._build(net)
        for network_id in [n for n in self._built if n not in self._wanted]:
            await self._unbuild(self._built[network_id])
        entries = self.gossip.entries(ENDPOINTS)
        for task_id, entry in entries.items():
            # Entries of ours from before an agent restart that gossip brought back: no task of ours has them.
            if self._tasks_known and entry.owner == self.node_id and task_id not in self._published:
                self.gossip.delete(ENDPOINTS, task_id)
        endpoints, errors = parse_all({k: e.value for k, e in self.gossip.entries(ENDPOINTS).items()})
        for error in errors:
            log.warning("ignoring a gossip entry: %s", error)
        local = {n.network_id: n.name for n in self._built.values()}
        peers = peers_by_network({k: e.value for k, e in self.gossip.entries(PEERS).items()}, self.node_id)
        vips = vips_by_network(endpoints, local)
        desired = mesh_state(endpoints, local, self._ingress_id)
        async with self._io:
            await asyncio.to_thread(self._apply_kernel, peers, vips, desired)
        self.names = NameTable(endpoints)
        for network_id, net in self._built.items():
            if self._listening.get(network_id) != net.address:
                await self.resolver.listen(network_id, net.address)
                self._listening[network_id] = net.address
        for network_id in [n for n in self._listening if n not in self._built]:
            await self.resolver.unlisten(network_id)
            del self._listening[network_id]

    def _apply_kernel(self, peers: dict[str, set[str]], vips: dict[str, set[str]], desired: Any) -> None:
        for network_id in self._built:
            self.overlay.set_peers(network_id, peers.get(network_id, set()))
            self.overlay.set_vips(network_id, vips.get(network_id, set()))
        if self._mesh_adopted:
            self.mesh.apply(desired)
        else:
            self.mesh.reconcile_on_start(desired)
            self._mesh_adopted = True

    async def _unbuild(self, net: LocalNetwork) -> None:
        async with self._io:
            try:
                await asyncio.to_thread(self.overlay.remove, net.network_id, net.name)
            except Exception as exc:  # containers still attached: tried again at the next change
                log.info("overlay network %s stays on this node for now: %s", net.name, exc)
                return
        del self._built[net.network_id]
        self.gossip.delete(PEERS, f"{net.network_id}/{self.node_id}")
