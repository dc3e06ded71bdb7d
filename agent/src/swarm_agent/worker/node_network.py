"""The worker's side of the data plane: started with the first assignment that brings the gossip keyring.

Gossip binds the node's address on port 7946 and joins through the managers; the overlay driver, the routing
mesh (nftables, or IPVS where asked and present) and the resolver are built then, and ``DataPlane`` keeps
them in step. A member that gossip declares dead is handed to ``on_dead`` for the managers.
"""
from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..api.models import ServiceEndpoint, Task
from ..net.dataplane import DRAIN_SECONDS, DataPlane
from ..net.dns import ServiceResolver
from ..net.gossip import DEFAULT_PORT, Gossip, Keyring, Member
from ..net.mesh.select import choose_backend
from ..net.overlay import Overlay
from .container_config import NetworkPlan

log = logging.getLogger(__name__)


class NodeNetwork:
    def __init__(self, node_id: str, docker_url: str, underlay_ip: str, on_dead: Callable[[str], None],
                 mesh_backend: str | None = None, gossip_port: int = DEFAULT_PORT) -> None:
        self.node_id = node_id
        self.docker_url = docker_url
        self.underlay_ip = underlay_ip
        self.on_dead = on_dead
        self.mesh_backend = mesh_backend
        self.gossip_port = gossip_port
        self.dataplane: DataPlane | None = None
        self._keys: tuple[bytes, ...] = ()
        self._runner: asyncio.Task[None] | None = None

    async def update(self, message: Mapping[str, Any]) -> None:
        """Apply one assignment message: keyring, this node's networks, the services' endpoints."""
        gossip_info = message.get("gossip") or {}
        keys = tuple(base64.b64decode(k) for k in gossip_info.get("keys") or ())
        if not keys:
            return
        managers = [m.rsplit(":", 1)[0] for m in message.get("managers") or []]
        if self.dataplane is None:
            await self._start(keys, managers)
        else:
            if keys != self._keys:
                self.dataplane.gossip.set_keyring(Keyring(keys))
            if not any(m.state == "alive" and m.node_id != self.node_id for m in self.dataplane.gossip.members()):
                # Alone in gossip (the managers were unreachable at start, or we were cut off): try again.
                await self._join(managers)
        self._keys = keys
        assert self.dataplane is not None
        self.dataplane.set_networks(message.get("networks") or [])

    async def _start(self, keys: tuple[bytes, ...], managers: list[str]) -> None:
        gossip = Gossip(self.node_id, self.underlay_ip, self.gossip_port, keyring=Keyring(keys))
        gossip.on_member(self._member_changed)
        await gossip.start()
        mesh = await asyncio.to_thread(choose_backend, self.mesh_backend)
        overlay = await asyncio.to_thread(Overlay, self.docker_url, self.underlay_ip)
        holder: dict[str, DataPlane] = {}
        resolver = ServiceResolver(lambda network_id, name: holder["dp"].names.lookup(network_id, name),
                                   client_networks=lambda network_id, client: holder["dp"].names.networks_of(
                                       network_id, client))
        self.dataplane = holder["dp"] = DataPlane(self.node_id, overlay, gossip, mesh, resolver)
        # Join first: the tables then hold everybody's endpoints, so the mesh a restarted agent finds in the
        # kernel is reconciled against the whole picture rather than emptied for a moment.
        await self._join(managers)
        self._runner = asyncio.create_task(self.dataplane.run(), name="dataplane")

    async def _join(self, managers: list[str]) -> None:
        assert self.dataplane is not None
        peers = [m for m in managers if m != self.underlay_ip]
        if peers:
            joined = await self.dataplane.gossip.join(peers)
            log.info("node %s: gossip joined through %d of %d managers", self.node_id, joined, len(peers))

    def _member_changed(self, member: Member) -> None:
        if member.state == "dead":
            log.warning("node %s: gossip declares node %s (%s) dead", self.node_id, member.node_id, member.address)
            self.on_dead(member.node_id)

    async def prepare(self, task: Task) -> tuple[list[NetworkPlan], list[str]] | None:
        """Networks and resolvers to start ``task`` with; None while they are not ready on this node."""
        if not task.NetworksAttachments:
            return [], []
        if self.dataplane is None:
            return None
        plan = await self.dataplane.prepare(task)
        if plan is None:
            return None
        return ([NetworkPlan(name, ip, tuple(aliases)) for name, ip, aliases in plan],
                self.dataplane.resolver_addresses(task))

    def tasks_known(self) -> None:
        if self.dataplane is not None:
            self.dataplane.tasks_known()

    def publish(self, task: Task, service_name: str, endpoint: ServiceEndpoint | None) -> None:
        if self.dataplane is not None:
            self.dataplane.publish(task, service_name, endpoint)

    async def withdraw(self, task_id: str) -> None:
        """Out of the mesh and DNS everywhere before the container stops."""
        if self.dataplane is not None and self.dataplane.withdraw(task_id):
            await asyncio.sleep(DRAIN_SECONDS)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self.dataplane is not None:
            await self.dataplane.resolver.close()
            await self.dataplane.gossip.leave()
            self.dataplane.overlay.close()
