"""The leader's address allocator: overlay addresses for new tasks and for the nodes that run them.

Runs inside the control loop. A task gets its addresses in the same tick that creates it, before it is
written, so a node never sees a task without them. A node gets its own address on a network (its bridge's,
which its tasks use as gateway and resolver) once it runs a task there. Addresses are claims in etcd
(``store.state.address_key``); a claim whose owner is gone for good is released here.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..api.models import Network, NetworkAttachment, Service, Task, TaskState
from ..store.state import address_key
from .ipam import AddressBook, with_prefix

if TYPE_CHECKING:
    from ..store.state import Snapshot

log = logging.getLogger(__name__)


def swarm_network_object(network: Network) -> dict[str, Any]:
    """The network as Swarm shows it inside a task's ``NetworksAttachments``; nodes build the network from it."""
    spec = network.Spec
    return {
        "ID": network.ID,
        "Version": network.Version.wire(),
        "CreatedAt": network.CreatedAt,
        "UpdatedAt": network.UpdatedAt,
        "Spec": {
            "Name": spec.Name,
            "Labels": spec.Labels or {},
            "DriverConfiguration": {"Name": "overlay"},
            "Internal": spec.Internal,
            "Attachable": spec.Attachable,
            "Ingress": spec.Ingress,
            "IPAMOptions": {"Driver": {"Name": "default"},
                            "Configs": [{"Subnet": network.Subnet, "Gateway": network.Gateway}]},
            "Scope": "swarm",
        },
        "DriverState": {"Name": "overlay", "Options": {"com.docker.network.driver.overlay.vxlanid_list": str(network.VNI)}},
        "IPAMOptions": {"Driver": {"Name": "default"},
                        "Configs": [{"Subnet": network.Subnet, "Gateway": network.Gateway}]},
    }


def ingress_network(networks: Iterable[Network]) -> Network | None:
    return next((n for n in networks if n.Spec.Ingress), None)


def publishes_ingress(service: Service) -> bool:
    return any(p.PublishMode == "ingress" for p in service.Endpoint.Ports or [])


def service_networks(service: Service, networks: dict[str, Network]) -> list[tuple[Network, list[str]]]:
    """The networks a task of ``service`` joins, with its aliases on each: its own, then ingress if it publishes."""
    out: list[tuple[Network, list[str]]] = []
    for attachment in service.Spec.TaskTemplate.Networks or []:
        network = networks.get(attachment.Target)
        if network is not None:
            out.append((network, list(attachment.Aliases or [])))
    ingress = ingress_network(networks.values())
    if ingress is not None and publishes_ingress(service) and all(n.ID != ingress.ID for n, _ in out):
        out.append((ingress, []))
    return out


class Allocator:
    def __init__(self) -> None:
        self._books: dict[str, AddressBook] = {}
        # Claims whose owner was missing at the last sweep: released if still missing at the next, since a
        # claim is written just before the object that owns it and the cache may show one before the other.
        self._orphans: set[str] = set()

    def _book(self, network: Network) -> AddressBook:
        book = self._books.get(network.ID)
        if book is None or str(book.net) != network.Subnet:
            book = self._books[network.ID] = AddressBook(network.Subnet, network.Gateway)
        return book

    def _take(self, network: Network, state: Snapshot, claims: dict[str, str], pending: dict[str, set[str]],
              owner: str) -> str:
        """An address of ``network`` held by nobody, nor by the claims of this pass (``pending``, by network)."""
        fresh = pending.setdefault(network.ID, set())
        ip = self._book(network).take(state.addresses.get(network.ID, {}), fresh)
        fresh.add(ip)
        claims[address_key(network.ID, ip)] = owner
        return ip

    def attach(self, tasks: Sequence[Task], state: Snapshot) -> dict[str, str]:
        """Give each new task its addresses (set in place); returns the claims to take before writing them.

        A task whose network has no address left gets none there and is logged; it still runs on its others.
        """
        claims: dict[str, str] = {}
        pending: dict[str, set[str]] = {}
        for task in tasks:
            service = state.services.get(task.ServiceID)
            if service is None:
                continue
            attachments = []
            for network, aliases in service_networks(service, state.networks):
                try:
                    ip = self._take(network, state, claims, pending, f"task:{task.ID}")
                except ValueError as exc:
                    log.error("task %s gets no address on network %s: %s", task.ID, network.Spec.Name, exc)
                    continue
                attachments.append(NetworkAttachment(
                    Network=swarm_network_object(network), Addresses=[with_prefix(ip, network.Subnet)],
                    Aliases=aliases or None,
                ))
            task.NetworksAttachments = attachments or None
        return claims

    def node_claims(self, state: Snapshot) -> dict[str, str]:
        """Addresses for nodes that run a live task on a network where they have none yet, and on the ingress
        network for every node once some service publishes an ingress port (every node serves those)."""
        claims: dict[str, str] = {}
        pending: dict[str, set[str]] = {}
        wanted: set[tuple[str, str]] = set()
        ingress = ingress_network(state.networks.values())
        if ingress is not None and any(publishes_ingress(s) for s in state.services.values()):
            wanted.update((ingress.ID, node_id) for node_id in state.nodes)
        for task in state.tasks.values():
            # A job's task is desired complete, not running, and needs its networks all the same.
            if task.NetworksAttachments and task.NodeID and task.DesiredState.rank <= TaskState.COMPLETE.rank:
                for attachment in task.NetworksAttachments:
                    wanted.add((attachment.Network["ID"], task.NodeID))
        for network_id, node_id in sorted(wanted):
            network = state.networks.get(network_id)
            if network_id in state.node_networks.get(node_id, {}) or network is None or node_id not in state.nodes:
                continue
            try:
                self._take(network, state, claims, pending, f"node:{node_id}")
            except ValueError as exc:
                log.error("node %s gets no address on network %s: %s", node_id, network.Spec.Name, exc)
        return claims

    def garbage(self, state: Snapshot) -> list[str]:
        """Claims to release: addresses of tasks that ended or are gone, of removed nodes and services."""
        suspects: set[str] = set()
        release: list[str] = []
        for network_id, book in state.addresses.items():
            for ip, owner in book.items():
                kind, _, owner_id = owner.partition(":")
                key = address_key(network_id, ip)
                if kind == "task":
                    task = state.tasks.get(owner_id)
                    if task is not None and task.Status.State.terminal:
                        release.append(key)
                        continue
                    gone = task is None
                elif kind == "node":
                    gone = owner_id not in state.nodes
                elif kind == "vip":
                    gone = owner_id not in state.services
                else:
                    continue
                if gone and network_id in state.networks:
                    if key in self._orphans:
                        release.append(key)
                    else:
                        suspects.add(key)
        self._orphans = suspects
        return release
