"""A manager: its etcd member, the watched cache, the signing CA, leader election and the leader's control loop.

Every manager serves the API and the dispatcher; only the one holding the
leader lease runs the control loop. Each manager also keeps a record of its
addresses under a lease of its own, which is how the others (and
``docker node ls``) know it is reachable.
"""

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from .. import pki, tokens
from ..api.errors import ApiError, BadRequest
from ..api.models import JoinTokenPair, Node, NodeDescription, NodeSpec, NodeStatus, Swarm, now
from ..store.etcd import EtcdClient, EtcdError, cmp_absent, op_put
from ..store.state import CA_KEY, ETCD_CA_KEY, JOIN_TOKENS, LEADER_KEY, MANAGERS, REMOVED, Cache, Conflict, Store
from .ca import RootCA, node_certificates
from .control import ControlLoop
from .etcd_member import EtcdMember, client_url, peer_url
from .keys import ETCD_CA_AAD, TOKENS_AAD, UNLOCK_AAD, InvalidKey, KeyFile, seal, unseal, value_aad
from .lease_keeper import LeaseKeeper
from .logbroker import LogBroker
from .rotation import Authority, authority_from_record
from .sessions import Sessions
from .task_writes import TaskWrites

log = logging.getLogger(__name__)

LEADER_TTL = 3  # seconds: how long a dead leader can hold the cluster up
MANAGER_TTL = 5
# Heartbeats a manager answers per second, on average, before the period stretches with the cluster (each is
# a TLS request and an etcd lease renewal: at 2,500 nodes and 5 s they would take most of a core). A node that
# dies is still found within seconds by gossip; only nodes without gossip wait for their lease.
HEARTBEATS_PER_MANAGER = 100.0
CA_CHECK_PERIOD = 1.0  # seconds between looks at the CA record and, during a rotation, at the nodes' certificates


def stretched_period(configured: float, nodes: int, managers: int) -> float:
    """The heartbeat period: the cluster's setting, or longer once the nodes' heartbeats would exceed
    HEARTBEATS_PER_MANAGER for each manager.

    It follows the nodes in the swarm, not the sessions open: were it to shrink as sessions end, the nodes that
    are left would have to heartbeat more often and be ended sooner, just when the managers are too busy to
    answer, and ending more sessions shrinks it further."""
    return max(configured, nodes / (HEARTBEATS_PER_MANAGER * max(1, managers)))


class Manager:
    def __init__(
        self,
        *,
        node_id: str,
        cluster_id: str,
        advertise_ip: str,
        api_port: int,
        etcd: EtcdClient,
        member: EtcdMember | None,
        data_key: bytes | None = None,
        key_file: KeyFile | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.advertise_ip = advertise_ip
        self.api_port = api_port
        self.member = member
        self.store = Store(etcd)
        self.cache = Cache(etcd)
        self.task_writes = TaskWrites(self.store, lambda: self.cache.revision)
        # Leases (nodes' sessions, the leader's, this manager's record) are renewed through connections of
        # their own: a lease must not lapse because status writes and reads hold every connection of the store's.
        self.leases = etcd.sibling(etcd.endpoints)
        # ... and renewed from a thread of their own, so that a busy event loop does not let them lapse.
        self.keeper = LeaseKeeper(etcd)
        self.authority: Authority
        self._ca_record: dict[str, Any] = {}
        # Called with the new authority when the CA record changes (a rotation starts or ends).
        self.on_authority: Callable[[Authority], None] = lambda authority: None
        self.etcd_ca: RootCA
        self.running = False
        self.is_leader = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._control: ControlLoop | None = None
        self._record_lease = 0
        self.logs = LogBroker(self)
        self.sessions = Sessions(self)
        # The swarm's data key (see keys.py), and this manager's copy of it on disk.
        self.data_key = data_key
        self.key_file = key_file
        # Opened values in the form assignments carry them, (kind, ID) -> (sealed, base64): values never
        # change, and opening a large one on every assignment a node is sent costs milliseconds.
        self._opened: dict[tuple[str, str], tuple[str, str]] = {}

    @property
    def root_ca(self) -> RootCA:
        return self.authority.root

    @property
    def api_addr(self) -> str:
        return f"{self.advertise_ip}:{self.api_port}"

    def log_event(self, what: str, **fields: Any) -> None:
        log.info("%s %s", what, " ".join(f"{k}={v}" for k, v in fields.items()))

    async def start(self) -> None:
        record = await self.store.get_json(CA_KEY)
        if record is None:
            raise RuntimeError("the store holds no root CA: this etcd does not belong to an initialised swarm")
        self.authority = authority_from_record(record, self.data_key)
        self._ca_record = record
        etcd_record = await self.store.get_json(ETCD_CA_KEY)
        if etcd_record is None or self.data_key is None:
            raise RuntimeError("this manager cannot open the etcd CA: the store holds none, or the data key is missing")
        self.etcd_ca = RootCA.from_sealed_record(etcd_record, self.data_key, ETCD_CA_AAD)
        self.running = True
        self.keeper.start()
        self._tasks = [
            asyncio.create_task(self.cache.run(), name="cache"),
            asyncio.create_task(self._advertise(), name="manager-record"),
            asyncio.create_task(self._campaign(), name="election"),
            asyncio.create_task(self._follow_ca(), name="root-ca"),
            # A stop leaves the session lease to expire: its nodes move to other managers meanwhile.
            asyncio.create_task(self.sessions.run(), name="sessions"),
        ]
        await self.cache.ready()
        if self.data_key is not None and self.key_file is not None:
            self._tasks.append(asyncio.create_task(self._keep_key_file(), name="key-file"))
        else:
            log.error("manager %s holds no data key: secrets and configs cannot be read or written here", self.node_id)
        log.info("manager %s started (api %s)", self.node_id, self.api_addr)

    async def stop(self) -> None:
        self.running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._record_lease:
            # Others see this manager gone at once rather than when the lease runs out.
            with contextlib.suppress(EtcdError):
                await self.store.etcd.lease_revoke(self._record_lease)
        await self.keeper.close()
        await self.store.etcd.close()
        await self.leases.close()

    # ------------------------------------------------------------- records

    def manager_addrs(self) -> list[str]:
        addrs = [m["api_addr"] for m in self.cache.state.managers.values() if "api_addr" in m]
        return sorted(set(addrs) | {self.api_addr})

    async def heartbeat_period(self) -> float:
        state = self.cache.state
        cluster = state.cluster or await self.store.get_cluster()
        configured = (cluster.Spec.Dispatcher.HeartbeatPeriod if cluster else 5_000_000_000) / 1e9
        return stretched_period(configured, len(state.nodes), len(state.managers))

    async def _advertise(self) -> None:
        """Keep this manager's record alive; it vanishes with the lease when the agent dies."""
        record = {
            "api_addr": self.api_addr,
            "etcd_client": client_url(self.advertise_ip),
            "etcd_peer": peer_url(self.advertise_ip),
        }
        while True:
            lease = self._record_lease
            try:
                if not lease or self.keeper.lost(lease):
                    self.keeper.drop(lease)
                    self._record_lease = await self.store.etcd.lease_grant(MANAGER_TTL)
                    await self.store.put_json(MANAGERS + self.node_id, record, lease=self._record_lease)
                    self.keeper.hold(self._record_lease, MANAGER_TTL)
                self._learn_endpoints()
            except EtcdError as exc:
                log.warning("manager %s could not renew its record: %s", self.node_id, exc)
                self._record_lease = 0
            await asyncio.sleep(1)

    def _learn_endpoints(self) -> None:
        """Let the etcd client fail over to the other managers' members."""
        urls = [m["etcd_client"] for m in self.cache.state.managers.values() if "etcd_client" in m]
        for etcd in (self.store.etcd, self.leases, self.keeper.etcd):
            for url in urls:
                if url not in etcd.endpoints:
                    etcd.endpoints.append(url)

    # ---------------------------------------------------------------- keys

    def _key(self) -> bytes:
        if self.data_key is None:
            raise ApiError(f"manager {self.node_id} holds no key for secrets and configs; "
                           "use another manager, or demote and promote this one", status=503)
        return self.data_key

    def seal_value(self, kind: str, obj_id: str, data: bytes) -> str:
        return seal(self._key(), data, value_aad(kind, obj_id))

    def open_value(self, kind: str, obj_id: str, sealed: str) -> bytes:
        try:
            return unseal(self._key(), sealed, value_aad(kind, obj_id))
        except InvalidKey:
            raise ApiError(f"{kind} {obj_id} cannot be opened with this manager's data key", status=500) from None

    def value_for_node(self, kind: str, obj_id: str, sealed: str) -> str:
        """The value, base64-encoded, to hand to a node whose task uses it."""
        cached = self._opened.get((kind, obj_id))
        if cached is not None and cached[0] == sealed:
            return cached[1]
        state = self.cache.state
        if len(self._opened) >= len(state.secrets) + len(state.configs):
            # Forget what was removed.
            self._opened = {k: v for k, v in self._opened.items()
                            if k[1] in (state.secrets if k[0] == "secret" else state.configs)}
        value = base64.b64encode(self.open_value(kind, obj_id, sealed)).decode()
        self._opened[(kind, obj_id)] = (sealed, value)
        return value

    def seal_unlock_key(self, unlock_key: bytes) -> str:
        return seal(self._key(), unlock_key, UNLOCK_AAD)

    def unlock_key(self) -> bytes | None:
        """The swarm's unlock key, None without autolock."""
        sealed = self.cache.state.unlock_key
        return unseal(self._key(), sealed, UNLOCK_AAD) if sealed else None

    async def join_tokens(self) -> JoinTokenPair:
        kv = await self.store.etcd.get(JOIN_TOKENS)
        if kv is None:
            cluster = await self.store.get_cluster()  # initialised before the tokens were sealed
            return cluster.JoinTokens if cluster else JoinTokenPair()
        return JoinTokenPair.model_validate_json(unseal(self._key(), kv.value.decode(), TOKENS_AAD))

    def join_tokens_op(self, pair: JoinTokenPair) -> dict[str, Any]:
        return op_put(JOIN_TOKENS, seal(self._key(), pair.model_dump_json().encode(), TOKENS_AAD))

    async def refresh_authority(self) -> Authority:
        """The signing authority as the store holds it now: another manager may have started or ended a rotation."""
        record = await self.store.get_json(CA_KEY)
        if record is not None and record != self._ca_record:
            self.authority = authority_from_record(record, self.data_key)
            self._ca_record = record
            new = self.authority.new
            log.info("manager %s: root CA %s%s", self.node_id, self.authority.root.digest,
                     f", rotating to {new.digest}" if new else "")
            self.on_authority(self.authority)
        return self.authority

    def authority_op(self, authority: Authority) -> dict[str, Any]:
        return op_put(CA_KEY, json.dumps(authority.record(self._key())))

    async def _follow_ca(self) -> None:
        """Follow the CA record; the leader ends a rotation once every node holds a certificate from the new root."""
        while True:
            try:
                # The cluster first: a rotation started after this read changes its version, and the finish fails.
                cluster = await self.store.get_cluster()
                authority = await self.refresh_authority()
                if authority.rotating and self.is_leader and cluster is not None:
                    await self._finish_rotation(cluster, authority)
            except (EtcdError, ApiError, ValueError, RuntimeError) as exc:
                # ValueError/RuntimeError: a CA record this manager cannot open; it keeps the authority it has.
                log.error("manager %s: could not check the root CA: %s", self.node_id, exc)
            await asyncio.sleep(CA_CHECK_PERIOD)

    async def _finish_rotation(self, cluster: Swarm, authority: Authority) -> None:
        wanted = authority.tls_info()
        behind = [n.ID for n in await self.store.list(Node)
                  if n.Description.TLSInfo is None
                  or n.Description.TLSInfo.CertIssuerPublicKey != wanted.CertIssuerPublicKey
                  or n.Description.TLSInfo.CertIssuerSubject != wanted.CertIssuerSubject]
        if behind:
            log.debug("root rotation waits for nodes %s", ", ".join(sorted(behind)))
            return
        done = authority.finished()
        cluster.RootRotationInProgress = False
        cluster.TLSInfo = done.tls_info()
        cluster.UpdatedAt = now()
        # Join tokens name the root's digest: the old ones would point joining nodes at a root no longer trusted.
        join_tokens = JoinTokenPair(Worker=tokens.new_token(done.root.cert_pem), Manager=tokens.new_token(done.root.cert_pem))
        try:
            await self.store.put_cluster(cluster, also=[self.authority_op(done), self.join_tokens_op(join_tokens)])
        except Conflict:
            return  # the swarm changed meanwhile (another rotation, say): look again next time
        log.info("root rotation finished: root CA %s replaces %s; join tokens renewed", done.root.digest,
                 authority.root.digest)
        await self.refresh_authority()

    async def _keep_key_file(self) -> None:
        """Keep this manager's copy of the data key sealed with the swarm's current unlock key (or in the
        clear without autolock), whichever manager switched autolock or rotated the key."""
        assert self.key_file is not None and self.data_key is not None
        applied: str | None | bool = False  # False: nothing written yet
        revision = 0
        while True:
            sealed = self.cache.state.unlock_key
            if sealed != applied:
                try:
                    self.key_file.save(self.data_key, self.unlock_key())
                    applied = sealed
                    log.info("manager %s keeps its data key %s", self.node_id,
                             "sealed with the unlock key" if sealed else "unsealed (autolock is off)")
                except InvalidKey:
                    log.error("manager %s cannot open the swarm's unlock key with its data key", self.node_id)
                    applied = sealed
            revision = await self.cache.wait_change(revision, timeout=30)

    # ------------------------------------------------------------ election

    async def _campaign(self) -> None:
        while True:
            try:
                lease = await self.store.etcd.lease_grant(LEADER_TTL)
                won, _, _ = await self.store.etcd.txn(
                    [cmp_absent(LEADER_KEY)],
                    [op_put(LEADER_KEY, json.dumps({"node_id": self.node_id, "api_addr": self.api_addr}), lease)],
                )
                if won:
                    await self._lead(lease)
                else:
                    await self.store.etcd.lease_revoke(lease)
                    await self._wait_for_vacancy()
            except EtcdError as exc:
                log.warning("manager %s: election round failed: %s", self.node_id, exc)
                await asyncio.sleep(0.5)

    async def _wait_for_vacancy(self) -> None:
        revision = self.cache.revision
        while self.cache.state.leader is not None:
            revision = await self.cache.wait_change(revision, timeout=LEADER_TTL)

    async def _lead(self, lease: int) -> None:
        log.info("manager %s is now the leader", self.node_id)
        self.is_leader = True
        self._control = ControlLoop(self)
        control = asyncio.create_task(self._control.run(), name="control-loop")
        self.keeper.hold(lease, LEADER_TTL)
        try:
            while not control.done():
                await asyncio.sleep(LEADER_TTL / 6)
                if self.keeper.lost(lease):
                    log.warning("leader %s lost its lease; stepping down", self.node_id)
                    break
        finally:
            self.keeper.drop(lease)
            self.is_leader = False
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await control
            if control.done() and not control.cancelled() and control.exception():
                log.error("control loop failed: %r", control.exception())
            with contextlib.suppress(EtcdError):
                await self.store.etcd.lease_revoke(lease)

    # ---------------------------------------------------------- membership

    async def admit(self, *, role: str, csr_pem: bytes, hostname: str, advertise_addr: str, availability: str) -> dict[str, Any]:
        """Sign a joining node's certificate and record it; a manager also becomes an etcd member."""
        ip = advertise_addr.rsplit(":", 1)[0] if advertise_addr.count(":") == 1 else advertise_addr
        node_id = pki.new_node_id()
        result = await self.issue(csr_pem, node_id=node_id, role=role, ip=ip)
        node = Node(
            ID=node_id,
            Spec=NodeSpec(Role=role, Availability=availability),
            Description=NodeDescription(Hostname=hostname),
            Status=NodeStatus(State="unknown", Addr=ip),
        )
        await self.store.create(node)
        if role == "manager":
            try:
                result["etcd_initial_cluster"] = await self.add_member(node_id, ip)
            except BaseException:
                # The join failed (etcd refused another member, say): no node record may stay behind.
                await self.store.delete(node, check_version=False)
                log.warning("node %s (%s) could not join as manager: its etcd member was refused", node_id, hostname)
                raise
        log.info("node %s (%s) joined as %s from %s", node_id, hostname, role, ip)
        return result

    async def issue(self, csr_pem: bytes, *, node_id: str, role: str, ip: str) -> dict[str, Any]:
        """A node's credentials in ``role``: its certificate for the CSR's key; a manager also gets an etcd
        certificate for the same key and the data key."""
        cluster = await self.store.get_cluster()
        assert cluster is not None
        try:
            await self.refresh_authority()
            authority = self.authority
            cert, etcd_cert = node_certificates(authority.signer, self.etcd_ca, csr_pem, node_id=node_id, role=role,
                                                cluster_id=self.cluster_id,
                                                expiry_ns=cluster.Spec.CAConfig.NodeCertExpiry, ip=ip)
        except ValueError as exc:
            raise BadRequest(f"invalid certificate request: {exc}") from None
        result = {
            "node_id": node_id,
            "cluster_id": self.cluster_id,
            "role": role,
            "cert": authority.chain(cert).decode(),
            "ca": authority.trust_pem.decode(),
            "managers": self.manager_addrs(),
        }
        if etcd_cert is not None:
            # Only a manager runs etcd and may read secrets: only it gets these.
            result.update(etcd_cert=etcd_cert.decode(), etcd_ca=self.etcd_ca.cert_pem.decode(),
                          data_key=base64.b64encode(self._key()).decode())
        return result

    async def add_member(self, node_id: str, ip: str) -> str:
        """Make room for a new manager's etcd member; returns the initial-cluster string it starts with.

        The member joins as a learner, which does not count towards quorum,
        and is promoted to a voter once it has caught up: a new manager whose
        etcd never comes up cannot take the cluster's quorum down with it.
        """
        if self.member is None:
            return ""  # an external etcd: the new manager uses it as configured
        members = await self.store.etcd.member_list()
        existing = next((m for m in members if peer_url(ip) in m.get("peerURLs", [])), None)
        if existing is not None and existing.get("isLearner"):
            # Left from an attempt that failed: its data is gone, so it must start afresh under a new ID.
            await self.store.etcd.member_remove(int(existing["ID"]))
            existing = None
        if existing is None:
            member_id, members = await self.store.etcd.member_add(peer_url(ip), learner=True)
            self._tasks.append(asyncio.create_task(self._promote_when_synced(member_id, node_id), name="promote"))
        return ",".join(f"{m.get('name') or node_id}={m['peerURLs'][0]}" for m in members)

    async def _promote_when_synced(self, member_id: int, node_id: str, patience: float = 120.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while loop.time() < deadline:
            await asyncio.sleep(1)
            try:
                await self.store.etcd.member_promote(member_id)
                log.info("etcd member of manager %s caught up and now votes", node_id)
                return
            except EtcdError as exc:
                if "member not found" in str(exc):
                    return
                log.debug("etcd member of manager %s not promoted yet: %s", node_id, exc)
        log.error("etcd member of manager %s did not catch up within %.0f s; removing it", node_id, patience)
        with contextlib.suppress(EtcdError):
            await self.store.etcd.member_remove(member_id)

    async def remove_node(self, node: Node) -> None:
        await self.store.put_json(REMOVED + node.ID, {"removed": True})
        await self.store.delete(node, check_version=False)
        # Every route checks callers against the cache: once this returns, this manager refuses the node.
        await self.cache.barrier()
        log.info("node %s (%s) removed from the swarm", node.ID, node.Description.Hostname)

    async def leave_etcd(self) -> None:
        """Take this manager's member out of etcd before its data goes.

        The request goes to another member: the one being removed stops
        serving as soon as the removal commits, before it could answer.
        """
        members = await self.store.etcd.member_list()
        mine = next((m for m in members if m.get("name") == self.node_id), None)
        if mine is None or len(members) <= 1:
            return
        others = [url for m in members if m is not mine for url in m.get("clientURLs", [])]
        client = self.store.etcd.sibling(others)
        try:
            await client.member_remove(int(mine["ID"]))
        finally:
            await client.close()
        log.info("removed etcd member of manager %s", self.node_id)
