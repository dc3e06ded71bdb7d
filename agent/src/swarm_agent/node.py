"""The node agent: one process per host, inactive until it inits or joins a swarm, then a worker or a manager.

What the node is survives restarts in ``<data dir>/state.json`` and its
certificates; a restarted agent picks up where it was, adopting its etcd
member and its running containers.
"""

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import os
import platform
import shutil
import socket
from socket import gethostname
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__, pki, tokens
from .api import app as api_app
from .api import logs, networks, nodes, openapi, secrets, services, swarm, system, tasks
from .api.errors import ApiError, BadRequest, NotManager, NOT_IN_SWARM, SWARM_LOCKED, WORKER_NODE
from .api.models import (
    InitRequest,
    JoinRequest,
    JoinTokenPair,
    NetworkSpec,
    Node,
    NodeSpec,
    NodeStatus,
    Swarm,
)
from .manager import dispatcher, logbroker
from .manager.ca import ETCD_CA_COMMON_NAME, RootCA, node_certificates
from .manager.etcd_member import EtcdMember, client_tls
from .manager.keys import ETCD_CA_AAD, TOKENS_AAD, UNLOCK_AAD, InvalidKey, KeyFile, new_key, parse_unlock_key, seal
from .manager.manager import Manager
from .manager.rotation import Authority, issuer_info
from .store.etcd import EtcdClient, op_put
from .manager.ipam import INGRESS_NAME
from .store.state import CA_KEY, ETCD_CA_KEY, JOIN_TOKENS, UNLOCK_KEY, Snapshot, Store
from .worker.executor import Executor
from .worker.join import request_join
from .worker.renewal import Renewal, authority_changed, request_certificate
from .worker.node_network import NodeNetwork
from .worker.secret_files import TaskFiles
from .worker.session import WorkerSession

log = logging.getLogger(__name__)

DEFAULT_PORT = 2377
ROLE_RETRY = 10.0  # seconds before a failed promotion or demotion is tried again
ALREADY_IN_SWARM = (
    'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join another one.'
)


@dataclass
class AgentConfig:
    data_dir: Path = Path("/var/lib/swarm")
    socket: Path = Path("/run/swarm/swarm.sock")
    docker_url: str = "unix:///var/run/docker.sock"
    hostname: str = field(default_factory=gethostname)
    etcd_binary: str = "etcd"
    etcd_endpoints: list[str] = field(default_factory=list)
    mesh_backend: str | None = None  # nftables or ipvs; None: nftables, IPVS only where asked and present
    renew_window: tuple[float, float] = pki.RENEW_WINDOW  # fractions of a certificate's lifetime


@dataclass
class NodeState:
    node_id: str
    cluster_id: str
    role: str
    advertise_ip: str
    listen_host: str
    api_port: int
    managers: list[str]


def split_addr(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[V6]:PORT`` or an interface name to (host, port)."""
    value = value.strip()
    host, port = value, default_port
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif value.count(":") == 1:
        host, raw_port = value.split(":")
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise BadRequest(f"invalid port in address {value!r}")
        port = int(raw_port)
    if host and not _is_ip(host):
        host = interface_ip(host)
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _addresses() -> list[tuple[str, str]]:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=False).stdout
    return [
        (link["ifname"], a["local"])
        for link in json.loads(out or "[]")
        for a in link.get("addr_info", [])
        if a.get("scope") == "global"
    ]


def interface_ip(name: str) -> str:
    for ifname, ip in _addresses():
        if ifname == name:
            return ip
    raise BadRequest(f"advertise address {name!r} is neither an IP address nor an interface with an IPv4 address")


def route_source(ip: str) -> str:
    """The local address this host uses to reach ``ip`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, 9))
        return probe.getsockname()[0]


def default_ip() -> str:
    found = _addresses()
    if len(found) == 1:
        return found[0][1]
    if not found:
        raise BadRequest("could not find an address to advertise: this host has no global IPv4 address; use --advertise-addr")
    listed = ", ".join(f"{ip} on {ifname}" for ifname, ip in found)
    raise BadRequest(
        f"could not choose an IP address to advertise since this system has multiple addresses ({listed}); "
        "use --advertise-addr"
    )


class NodeAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.state: NodeState | None = None
        self.certs: pki.NodeCerts | None = None
        self.manager: Manager | None = None
        self.member: EtcdMember | None = None
        self.worker: WorkerSession | None = None
        self.local_state = "inactive"
        self._worker_task: asyncio.Task[None] | None = None
        self._renewal_task: asyncio.Task[None] | None = None
        self._server_tls: pki.ServerTLS | None = None
        self._renewal = Renewal(self._identity, self._renew, config.renew_window)
        self._tcp: web.AppRunner | None = None
        self._transition = asyncio.Lock()
        self._role_change: asyncio.Task[None] | None = None
        self._role_retry_at = 0.0
        # A manager's copy of the swarm's data key (keys.py); None on workers and on a locked manager.
        self.data_key: bytes | None = None

    # ----------------------------------------------------------- identity

    @property
    def cluster_id(self) -> str:
        return self.state.cluster_id if self.state else ""

    @property
    def state_file(self) -> Path:
        return self.config.data_dir / "state.json"

    @property
    def task_files(self) -> TaskFiles:
        return TaskFiles(self.config.data_dir / "task-secrets")

    @property
    def key_file(self) -> KeyFile:
        return KeyFile.of(self.config.data_dir)

    def _save_state(self) -> None:
        assert self.state is not None
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        tmp.replace(self.state_file)

    def require_manager(self) -> Manager:
        if self.manager is not None and self.manager.running:
            return self.manager
        if self.local_state == "locked":
            raise NotManager(SWARM_LOCKED)
        raise NotManager(WORKER_NODE if self.state else NOT_IN_SWARM)

    def swarm_header(self) -> str:
        if self.state is None:
            return self.local_state
        return f"{self.local_state}/{'manager' if self.manager else 'worker'}"

    # ------------------------------------------------------------ serving

    def routes(self) -> list[api_app.Route]:
        own = [
            api_app.Route("GET", "/swarmd/agent", self._agent_status, "manager"),
        ]
        return (system.ROUTES + swarm.ROUTES + nodes.ROUTES + services.ROUTES + tasks.ROUTES + networks.ROUTES
                + secrets.ROUTES + logs.ROUTES + dispatcher.ROUTES + logbroker.ROUTES + openapi.ROUTES + own)

    async def run(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.config.data_dir, 0o700)
        local = web.AppRunner(api_app.build_app(self, self.routes(), local=True), access_log=None)
        await local.setup()
        self.config.socket.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.config.socket.unlink()
        site = web.UnixSite(local, str(self.config.socket))
        await site.start()
        os.chmod(self.config.socket, 0o600)
        log.info("agent %s serving %s", __version__, self.config.socket)
        await self._resume()
        try:
            await asyncio.Event().wait()
        finally:
            await self._deactivate()
            await local.cleanup()

    async def _resume(self) -> None:
        if not self.state_file.exists():
            return
        self.state = NodeState(**json.loads(self.state_file.read_text()))
        self.certs = pki.NodeCerts.load(self.config.data_dir)
        if self.certs is None:
            log.error("state file present but certificates missing; this node must leave and join again")
            self.local_state = "error"
            return
        if self.state.role == "manager" and self.key_file.exists():
            if self.key_file.locked():
                # Autolock: nothing runs, not even etcd, until "docker swarm unlock" gives the key.
                log.warning("manager %s of swarm %s is locked; unlock it with \"docker swarm unlock\"",
                            self.state.node_id, self.state.cluster_id)
                self.local_state = "locked"
                return
            self.data_key = self.key_file.load()
        log.info("resuming as %s %s of swarm %s", self.state.role, self.state.node_id, self.state.cluster_id)
        await self._activate(initial_cluster=None)

    def _own_member(self) -> EtcdMember:
        assert self.state is not None and self.certs is not None
        return self._member(self.state.node_id, self.state.advertise_ip, self.state.cluster_id, self.certs)

    def _member(self, node_id: str, ip: str, cluster_id: str, certs: pki.NodeCerts) -> EtcdMember:
        """The etcd member of this node, serving with its certificate files (saved before it starts)."""
        return EtcdMember(self.config.data_dir / "etcd", node_id, ip, cluster_id,
                          pki.NodeCerts.directory(self.config.data_dir), client_tls(certs), self.config.etcd_binary)

    async def unlock(self, unlock_key: str) -> None:
        async with self._transition:
            if self.state is None:
                raise NotManager("This node is not part of a swarm")
            if self.local_state != "locked":
                raise BadRequest("swarm is not locked")
            try:
                self.data_key = self.key_file.load(parse_unlock_key(unlock_key))
            except InvalidKey:
                raise BadRequest("swarm could not be unlocked: invalid key") from None
            log.info("manager %s unlocked", self.state.node_id)
            await self._activate(initial_cluster=None)

    async def _activate(self, initial_cluster: str | None) -> None:
        """Start what this node's role needs: etcd and the manager, then the worker session."""
        assert self.state is not None and self.certs is not None
        self.local_state = "pending"
        if self.state.role == "manager":
            if self.config.etcd_endpoints:
                etcd = EtcdClient(list(self.config.etcd_endpoints))
            else:
                if self.member is None:
                    # init already started the member it seeded; otherwise start (or adopt) it now.
                    self.member = self._own_member()
                    await self.member.start(initial_cluster, "existing" if initial_cluster else "new")
                etcd = EtcdClient([self.member.local_url], self.member.tls)
            self.manager = Manager(
                node_id=self.state.node_id,
                cluster_id=self.state.cluster_id,
                advertise_ip=self.state.advertise_ip,
                api_port=self.state.api_port,
                etcd=etcd,
                member=self.member,
                data_key=self.data_key,
                key_file=self.key_file,
            )
            await self.manager.start()
            runner = web.AppRunner(api_app.build_app(self, self.routes(), local=False), access_log=None)
            await runner.setup()
            self._server_tls = pki.ServerTLS(self.certs.cert_pem, self.certs.key_pem, self.certs.ca_pem)
            await web.TCPSite(runner, self.state.listen_host, self.state.api_port, ssl_context=self._server_tls.listener,
                              reuse_address=True).start()
            self._tcp = runner
        executor = Executor(self.config.docker_url, self.state.node_id)
        own = [f"{self.state.advertise_ip}:{self.state.api_port}"] if self.state.role == "manager" else []
        self.worker = WorkerSession(
            node_id=self.state.node_id,
            certs=self.certs,
            managers=own + [m for m in self.state.managers if m not in own],
            stay_with_first=bool(own),
            executor=executor,
            hostname=self.config.hostname,
            on_managers=self._remember_managers,
            on_role=self._role_wanted,
            on_authority=self._check_authority,
            network=NodeNetwork(
                self.state.node_id, self.config.docker_url, self.state.advertise_ip,
                on_dead=lambda node_id: self.worker.report_down(node_id) if self.worker else None,
                mesh_backend=self.config.mesh_backend,
            ),
            files=self.task_files,
        )
        self._worker_task = asyncio.create_task(self.worker.run(), name="worker-session")
        self._renewal_task = asyncio.create_task(self._renewal.run(), name="certificate-renewal")
        for job in (self._worker_task, self._renewal_task):
            job.add_done_callback(_log_failure)
        self.local_state = "active"

    async def _first_session(self, timeout: float = 20.0) -> None:
        """Like Docker, init and join return once the node is in the swarm for real: its session is open."""
        assert self.worker is not None
        try:
            await asyncio.wait_for(self.worker.established.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("node %s has no session with a manager yet; it keeps trying", self.state.node_id if self.state else "?")

    def _remember_managers(self, managers: list[str]) -> None:
        if self.state is not None and managers != self.state.managers:
            self.state.managers = managers
            self._save_state()

    async def _deactivate(self) -> None:
        if self._renewal_task is not None:
            self._renewal_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewal_task
            self._renewal_task = None
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker_task
            self._worker_task = None
        self.worker = None
        if self._tcp is not None:
            await self._tcp.cleanup()
            self._tcp = None
            self._server_tls = None
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None

    # ------------------------------------------------------ init and join

    async def init(self, req: InitRequest) -> str:
        async with self._transition:
            if self.state is not None:
                raise NotManager(ALREADY_IN_SWARM)
            if bool(req.Spec.CAConfig.SigningCACert) != bool(req.Spec.CAConfig.SigningCAKey):
                raise BadRequest("Spec.CAConfig: SigningCACert and SigningCAKey must be given together")
            advertise_ip, api_port = split_addr(req.AdvertiseAddr) if req.AdvertiseAddr else (default_ip(), 0)
            listen_host, listen_port = split_addr(req.ListenAddr or f"0.0.0.0:{DEFAULT_PORT}")
            api_port = api_port or listen_port
            ca_spec = req.Spec.CAConfig
            try:
                root_ca = (
                    RootCA.from_pem(ca_spec.SigningCACert.encode(), ca_spec.SigningCAKey.encode())
                    if ca_spec.SigningCACert
                    else RootCA.generate()
                )
            except ValueError as exc:
                raise BadRequest(f"Spec.CAConfig: {exc}") from None
            autolock = req.AutoLockManagers or req.Spec.EncryptionConfig.AutoLockManagers
            data_key, unlock_key = new_key(), new_key() if autolock else None
            node_id, cluster_id = pki.new_node_id(), pki.new_node_id()
            key = pki.new_key_pem()
            etcd_ca = root_ca.issue_ca(ETCD_CA_COMMON_NAME)
            cert, etcd_cert = node_certificates(
                root_ca, etcd_ca, pki.make_csr(key), node_id=node_id, role="manager", cluster_id=cluster_id,
                expiry_ns=req.Spec.CAConfig.NodeCertExpiry, ip=advertise_ip,
            )
            certs = pki.NodeCerts(ca_pem=root_ca.cert_pem, cert_pem=cert, key_pem=key,
                                  etcd_ca_pem=etcd_ca.cert_pem, etcd_cert_pem=etcd_cert, etcd_key_pem=key)
            spec = req.Spec.model_copy(deep=True)
            spec.CAConfig.SigningCACert = spec.CAConfig.SigningCAKey = None
            spec.EncryptionConfig.AutoLockManagers = autolock
            cluster = Swarm(
                ID=cluster_id,
                Spec=spec,
                TLSInfo=issuer_info(root_ca.cert_pem, root_ca.certificate),
                DefaultAddrPool=req.DefaultAddrPool or ["10.0.0.0/8"],
                SubnetSize=req.SubnetSize or 24,
                DataPathPort=req.DataPathPort or 4789,
            )
            description = await asyncio.to_thread(Executor(self.config.docker_url, node_id).describe, self.config.hostname)
            me = Node(
                ID=node_id,
                Spec=NodeSpec(Role="manager", Availability=req.Availability or "active"),
                Description=description,
                Status=NodeStatus(State="unknown", Addr=advertise_ip),
            )
            # Whatever in etcd would lead to the data key is sealed with it (see manager/keys.py).
            join_tokens = JoinTokenPair(Worker=tokens.new_token(root_ca.cert_pem),
                                        Manager=tokens.new_token(root_ca.cert_pem))
            sealed = [op_put(JOIN_TOKENS, seal(data_key, join_tokens.model_dump_json().encode(), TOKENS_AAD)),
                      op_put(ETCD_CA_KEY, json.dumps(etcd_ca.sealed_record(data_key, ETCD_CA_AAD)))]
            if unlock_key:
                sealed.append(op_put(UNLOCK_KEY, seal(data_key, unlock_key, UNLOCK_AAD)))
            ca_record = Authority(root_ca).record(data_key)
            # etcd serves with the node's certificate files: they are written first.
            certs.save(self.config.data_dir)
            try:
                await self._seed_store(cluster, ca_record, me, certs, sealed)
            except BaseException:
                shutil.rmtree(pki.NodeCerts.directory(self.config.data_dir), ignore_errors=True)
                raise
            self.key_file.save(data_key, unlock_key)
            self.data_key = data_key
            self.certs = certs
            self.state = NodeState(
                node_id=node_id, cluster_id=cluster_id, role="manager", advertise_ip=advertise_ip,
                listen_host=listen_host, api_port=api_port, managers=[f"{advertise_ip}:{api_port}"],
            )
            self._save_state()
            try:
                await self._activate(initial_cluster=None)
            except Exception as exc:
                await self._wipe()
                raise ApiError(f"could not start the manager: {exc}") from exc
            await self._first_session()
            log.info("initialised swarm %s; this node %s is its first manager%s", cluster_id, node_id,
                     " (autolock on)" if autolock else "")
            return node_id

    async def _seed_store(self, cluster: Swarm, ca_record: dict[str, str], me: Node, certs: pki.NodeCerts,
                          sealed: list[dict[str, Any]]) -> None:
        """Start a fresh etcd member (or use the configured one) and write the cluster's first records."""
        if self.config.etcd_endpoints:
            etcd = EtcdClient(self.config.etcd_endpoints)
        else:
            member = self._member(me.ID, me.Status.Addr, cluster.ID, certs)
            shutil.rmtree(member.dir, ignore_errors=True)
            await member.start()
            self.member = member
            etcd = EtcdClient([member.local_url], member.tls)
        store = Store(etcd)
        try:
            if await store.get_cluster() is not None:
                raise BadRequest("the configured etcd already holds a swarm; use an empty one")
            await store.put_cluster(cluster, create=True, also=sealed)
            await store.put_json(CA_KEY, ca_record)
            await store.create(me)
            # Like Swarm, a new cluster has the ingress network that published ports are served on.
            ingress = NetworkSpec(Name=INGRESS_NAME, Driver="overlay", Ingress=True)
            await store.create(networks.new_network(ingress, Snapshot(cluster=cluster)))
        finally:
            await etcd.close()

    async def join(self, req: JoinRequest) -> None:
        async with self._transition:
            if self.state is not None:
                raise NotManager(ALREADY_IN_SWARM)
            listen_host, listen_port = split_addr(req.ListenAddr or f"0.0.0.0:{DEFAULT_PORT}")
            errors = []
            for remote in req.RemoteAddrs:
                host, port = split_addr(remote)
                try:
                    result, key = await request_join(
                        f"{host}:{port}",
                        req.JoinToken,
                        hostname=self.config.hostname,
                        advertise_addr=split_addr(req.AdvertiseAddr)[0] if req.AdvertiseAddr else "",
                        availability=req.Availability or "active",
                    )
                    local_ip = route_source(host)
                    break
                except ApiError:
                    raise
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    errors.append(f"{remote}: {exc}")
            else:
                raise ApiError(f"could not reach any manager to join: {'; '.join(errors)}", status=503)
            advertise_ip = split_addr(req.AdvertiseAddr)[0] if req.AdvertiseAddr else local_ip
            self.certs = pki.NodeCerts.granted(result, key)
            self.certs.save(self.config.data_dir)
            self._take_data_key(result)
            self.state = NodeState(
                node_id=result["node_id"], cluster_id=result["cluster_id"], role=result["role"],
                advertise_ip=advertise_ip, listen_host=listen_host, api_port=listen_port,
                managers=result["managers"],
            )
            self._save_state()
            try:
                await self._activate(initial_cluster=result.get("etcd_initial_cluster"))
            except Exception as exc:
                await self._wipe()
                raise ApiError(f"joined, but could not start this node's {result['role']} role: {exc}") from exc
            await self._first_session()
            log.info("joined swarm %s as %s %s", result["cluster_id"], result["role"], result["node_id"])

    # ---------------------------------------------------- promote, demote

    def _role_wanted(self, role: str) -> None:
        """The managers changed this node's role: switch once, outside the session that noticed."""
        if asyncio.get_running_loop().time() < self._role_retry_at:
            return
        if self._role_change is None or self._role_change.done():
            self._role_change = asyncio.create_task(self._change_role(role), name="role-change")

    async def _change_role(self, role: str) -> None:
        try:
            await self._switch_role(role)
        except Exception:
            # The session notices the role again with its next assignment and retries.
            log.exception("node %s could not change its role to %s", self.state.node_id if self.state else "?", role)

    async def _switch_role(self, role: str) -> None:
        async with self._transition:
            if self.state is None or self.certs is None or self.state.role == role:
                return
            granted = await self._request_certificate(role)
            if granted is None:
                return
            result, key = granted
            log.info("changing role of node %s from %s to %s", self.state.node_id, self.state.role, role)
            if self.manager is not None and self.member is not None:
                await self.manager.leave_etcd()
            await self._deactivate()
            if self.member is not None:
                await self.member.stop(wipe=True)
                self.member = None
            previous = (self.certs, self.state.role, self.state.managers)
            previous_key = self.data_key
            self._take_data_key(result)
            own = f"{self.state.advertise_ip}:{self.state.api_port}"
            self._adopt(
                pki.NodeCerts.granted(result, key),
                role,
                [m for m in result["managers"] if role == "manager" or m != own],
            )
            try:
                await self._activate(initial_cluster=result.get("etcd_initial_cluster") or None)
            except Exception:
                # Go back to what worked; the managers still want the new role, so try again later.
                log.exception("node %s could not start as a %s; staying a %s for now", self.state.node_id, role, previous[1])
                await self._deactivate()
                if self.member is not None:
                    await self.member.stop(wipe=True)
                    self.member = None
                self._adopt(*previous)
                self.data_key = previous_key
                await self._activate(initial_cluster=None)
                loop = asyncio.get_running_loop()
                self._role_retry_at = loop.time() + ROLE_RETRY
                loop.call_later(ROLE_RETRY, self._role_wanted, role)
                return
            log.info("node %s is now a %s", self.state.node_id, role)

    async def _request_certificate(self, role: str) -> tuple[dict[str, Any], bytes] | None:
        assert self.certs is not None
        return await request_certificate(self.certs, self._managers_to_try(), role)

    # ------------------------------------------------------------- renewal

    def _identity(self) -> pki.Identity:
        assert self.certs is not None
        return self.certs.identity

    async def _renew(self) -> bool:
        """Replace this node's certificate and key with fresh ones in the same role, without restarting anything.

        New connections present the new certificate (the worker session's
        client, this manager's TLS listener); open connections keep the
        old one, which stays valid until it expires.
        """
        async with self._transition:
            assert self.state is not None and self.certs is not None
            old = self.certs.identity
            granted = await self._request_certificate(self.state.role)
            if granted is None:
                return False
            result, key = granted
            certs = pki.NodeCerts.granted(result, key)
            try:
                certs.check()
            except ValueError as exc:
                log.error("node %s: the renewed certificate is unusable, keeping the current one: %s", old.node_id, exc)
                return False
            certs.save(self.config.data_dir)
            self.certs = certs
            if self._server_tls is not None:
                self._server_tls.load(certs.cert_pem, certs.key_pem, certs.ca_pem)
            if self.member is not None and certs.etcd_cert_pem is not None and certs.etcd_key_pem is not None:
                pki.load_chain(self.member.tls, certs.etcd_cert_pem, certs.etcd_key_pem)
            if self.worker is not None:
                self.worker.adopt(certs)
            new = certs.identity
            log.info("node %s renewed its %s certificate: serial %x -> %x, valid until %s",
                     new.node_id, new.role, old.serial, new.serial, new.not_after.isoformat())
            return True

    def _check_authority(self, trust_pem: bytes, issuer_pem: bytes) -> None:
        """Renew at once when the managers trust other roots or sign with another key than this node's certificate
        shows: a root rotation started or ended."""
        certs = self.certs
        if certs is None or self._renewal.woken:
            return
        if authority_changed(certs, trust_pem, issuer_pem):
            log.info("node %s: the swarm's root CA changed; renewing its certificate now", certs.identity.node_id)
            self._renewal.wake()

    def _take_data_key(self, answer: dict[str, Any]) -> None:
        """A manager keeps the data key its join or renew answer carries (the Manager writes it to disk);
        a worker keeps none."""
        self.data_key = base64.b64decode(answer["data_key"]) if answer.get("data_key") else None
        if self.data_key is None:
            self.key_file.remove()

    def _adopt(self, certs: pki.NodeCerts, role: str, managers: list[str]) -> None:
        assert self.state is not None
        self.certs = certs
        certs.save(self.config.data_dir)
        self.state.role = role
        self.state.managers = managers
        self._save_state()

    # --------------------------------------------------------------- leave

    async def leave(self, force: bool) -> None:
        async with self._transition:
            if self.state is None:
                raise NotManager("This node is not part of a swarm")
            if self.local_state == "locked" and not force:
                raise NotManager("Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore "
                                 "this message.")
            if self.manager is not None and not force:
                managers = len(self.manager.cache.state.managers)
                raise NotManager(
                    "You are attempting to leave the swarm on a node that is participating as a manager. "
                    f"Removing this node leaves {managers - 1} managers out of a potential quorum of {managers}. "
                    "The only way to restore a swarm that has lost consensus is to reinitialize it with "
                    "`--force-new-cluster`. Use `--force` to suppress this message."
                )
            if self.manager is not None and self.member is not None:
                with contextlib.suppress(Exception):
                    await self.manager.leave_etcd()
            if self.local_state == "locked" and not self.config.etcd_endpoints:
                # Never started, but its member may still run from before the restart: it goes with the node.
                # The other managers keep it as a member until it is removed there, as in Docker.
                self.member = self._own_member()
            executor = self.worker.executor if self.worker else Executor(self.config.docker_url, self.state.node_id)
            await self._say_goodbye()
            await self._deactivate()
            for task_id in await asyncio.to_thread(executor.observe_all):
                await asyncio.to_thread(executor.remove, task_id)
            await self._wipe()
            log.info("left the swarm")

    def _managers_to_try(self) -> list[str]:
        """The manager this node's session talks to first, then every other one it knows."""
        assert self.state is not None
        first = [self.worker.connected_to] if self.worker and self.worker.connected_to else []
        return first + [m for m in self.state.managers if m not in first]

    def _manager_client(self) -> aiohttp.ClientSession:
        """An HTTP client that presents this node's certificate and trusts only the swarm's CA."""
        assert self.certs is not None
        context = pki.client_context(self.certs.ca_pem, self.certs.cert_pem, self.certs.key_pem)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    async def _say_goodbye(self) -> None:
        """Tell the managers this node is leaving; if none answers, its session simply expires."""
        assert self.state is not None and self.certs is not None
        async with self._manager_client() as http:
            for addr in self._managers_to_try():
                try:
                    async with http.post(f"https://{addr}/swarmd/leave", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    log.info("manager %s did not take the goodbye: %s", addr, exc)

    async def _wipe(self) -> None:
        await self._deactivate()
        if self.member is not None:
            await self.member.stop(wipe=True)
            self.member = None
        shutil.rmtree(pki.NodeCerts.directory(self.config.data_dir), ignore_errors=True)
        self.key_file.remove()
        self.data_key = None
        self.task_files.destroy()
        self.state_file.unlink(missing_ok=True)
        self.state = None
        self.certs = None
        self.local_state = "inactive"

    # ---------------------------------------------------------------- info

    async def info(self) -> dict[str, Any]:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        swarm_info: dict[str, Any] = {
            "NodeID": self.state.node_id if self.state else "",
            "NodeAddr": self.state.advertise_ip if self.state else "",
            "LocalNodeState": self.local_state,
            "ControlAvailable": self.manager is not None,
            "Error": "",
            "RemoteManagers": None,
        }
        if self.manager is not None and self.manager.running:
            state = self.manager.cache.state
            swarm_info["RemoteManagers"] = [
                {"NodeID": node_id, "Addr": rec.get("api_addr", "")} for node_id, rec in sorted(state.managers.items())
            ]
            swarm_info["Nodes"] = len(state.nodes)
            swarm_info["Managers"] = sum(1 for n in state.nodes.values() if n.Spec.Role == "manager")
            if state.cluster is not None:
                cluster = state.cluster.wire()
                cluster.pop("JoinTokens", None)
                swarm_info["Cluster"] = cluster
        elif self.state is not None:
            swarm_info["RemoteManagers"] = [{"NodeID": "", "Addr": a} for a in self.state.managers]
        return {
            "ID": self.state.node_id if self.state else "",
            "Name": self.config.hostname,
            "ServerVersion": __version__,
            "OSType": "linux",
            "OperatingSystem": platform.platform(),
            "KernelVersion": platform.release(),
            "Architecture": arch,
            "NCPU": os.cpu_count() or 1,
            "Containers": 0,
            "Images": 0,
            "Driver": "",
            "Swarm": swarm_info,
        }

    async def _agent_status(self, request: web.Request) -> web.Response:
        mgr = self.manager
        status: dict[str, Any] = {
            "node_id": self.state.node_id if self.state else "",
            "cluster_id": self.cluster_id,
            "role": self.state.role if self.state else "",
            "local_state": self.local_state,
            "version": __version__,
            "session_manager": self.worker.connected_to if self.worker else None,
            "assigned_tasks": len(self.worker.assigned) if self.worker else 0,
            "log_streams": self.worker.logs.active if self.worker else 0,
        }
        if mgr is not None:
            state = mgr.cache.state
            status.update(
                leader=(state.leader or {}).get("node_id"),
                is_leader=mgr.is_leader,
                managers=sorted(state.managers),
                store_revision=mgr.cache.revision,
                nodes={n.ID: {"hostname": n.Description.Hostname, "state": n.Status.State,
                              "availability": n.Spec.Availability, "role": n.Spec.Role} for n in state.nodes.values()},
                services=len(state.services),
                tasks=len(state.tasks),
                log_subscriptions=len(state.log_subscriptions),
            )
        return api_app.json_response(status)


def _log_failure(job: "asyncio.Task[None]") -> None:
    """A job meant to run as long as the node does ended in error: say so, rather than leave the node without a
    session (or renewals) and nothing in its log."""
    if not job.cancelled() and job.exception() is not None:
        log.error("%s stopped: %r", job.get_name(), job.exception(), exc_info=job.exception())
