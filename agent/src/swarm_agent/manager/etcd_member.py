"""This manager's etcd member: started, watched and restarted by the agent.

A member that is already serving (the agent restarted, etcd did not) is
adopted rather than started twice; its data directory is the agent's own.

Clients and peers speak mutual TLS with the manager's etcd certificate,
which the etcd CA (below the swarm's root, see pki.ETCD_CA_FILE) issues to
managers only; etcd trusts that CA alone, so no worker certificate opens
either port. etcd reads certificate and key at every handshake: a renewal
applies without a restart.
"""

import asyncio
import logging
import os
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

from .. import pki
from ..store.etcd import EtcdClient, EtcdError

log = logging.getLogger(__name__)

CLIENT_PORT = 2379
PEER_PORT = 2380


def peer_url(ip: str) -> str:
    return f"https://{ip}:{PEER_PORT}"


def client_url(ip: str) -> str:
    return f"https://{ip}:{CLIENT_PORT}"


def client_tls(certs: pki.NodeCerts) -> ssl.SSLContext:
    """This manager's context for reaching etcd members; ``pki.load_chain`` on it applies a renewed certificate."""
    if certs.etcd_cert_pem is None or certs.etcd_ca_pem is None or certs.etcd_key_pem is None:
        raise RuntimeError(f"node {certs.identity.node_id} holds no etcd certificate, so it cannot run an etcd member")
    ctx = pki.client_context(certs.etcd_ca_pem, certs.etcd_cert_pem, certs.etcd_key_pem)
    # The etcd CA is the trust anchor, though not self-signed.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def _alive(pid: int) -> bool:
    """Running, and not a zombie: an exited child of this agent lingers until it is reaped."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child (adopted after a restart): its parent reaps it
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class EtcdMember:
    def __init__(self, data_dir: Path, name: str, ip: str, cluster_id: str, cert_dir: Path, tls: ssl.SSLContext,
                 binary: str = "etcd") -> None:
        self.dir = data_dir
        self.cert_dir = cert_dir
        self.tls = tls
        self.name = name
        # etcd derives its member and cluster IDs from the peer URLs and this token:
        # without the swarm's ID in it, two swarms on the same addresses would look alike.
        self.token = f"swarm-{cluster_id}"
        self.ip = ip
        self.binary = binary
        self.local_url = client_url("127.0.0.1")
        self._proc: subprocess.Popen[bytes] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pidfile(self) -> Path:
        return self.dir / "etcd.pid"

    async def healthy(self) -> bool:
        """True once the member serves linearizable reads: a learner that has not been promoted yet does not."""
        client = EtcdClient([self.local_url], self.tls, timeout=2)
        try:
            await client.call("/v3/kv/range", {"key": "AA==", "count_only": True})
            return True
        except EtcdError:
            return False
        finally:
            await client.close()

    def _adoptable_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    async def start(self, initial_cluster: str | None = None, state: str = "new") -> None:
        """Start the member (or adopt a running one) and wait until it serves."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._adoptable_pid() is not None and await self.healthy():
            log.info("adopted running etcd member %s (pid %s)", self.name, self.pidfile.read_text().strip())
        else:
            self._spawn(initial_cluster or f"{self.name}={peer_url(self.ip)}", state)
        self._supervisor = asyncio.create_task(self._supervise(), name="etcd-supervisor")
        # A member joining an existing cluster only turns healthy once it has caught up.
        for _ in range(600):
            if await self.healthy():
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self._proc.returncode}: {self._last_words()}")
            await asyncio.sleep(0.1)
        raise RuntimeError(f"etcd did not become healthy within 60 s; see {self.dir / 'etcd.log'}")

    def _last_words(self) -> str:
        """The lines of etcd's log that say why it stopped."""
        try:
            lines = (self.dir / "etcd.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        telling = [line for line in lines[-40:] if " C | " in line or " E | " in line or "panic" in line or "error" in line.lower()]
        return " / ".join(telling[-3:] or lines[-2:])

    def _tls_flags(self) -> list[str]:
        cert, key, ca = (str(self.cert_dir / name) for name in (pki.ETCD_CERT_FILE, pki.ETCD_KEY_FILE, pki.ETCD_CA_FILE))
        return [
            "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
            "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth",
            # A peer is known by its certificate; the address it connects from need not be the one its
            # certificate names (a host with several addresses), and checking it would mean DNS lookups.
            "--experimental-peer-skip-client-san-verification",
        ]

    def _spawn(self, initial_cluster: str, state: str) -> None:
        argv = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", f"{self.local_url},{client_url(self.ip)}",
            "--advertise-client-urls", client_url(self.ip),
            "--listen-peer-urls", peer_url(self.ip),
            "--initial-advertise-peer-urls", peer_url(self.ip),
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--auto-compaction-mode", "revision",
            "--auto-compaction-retention", "10000",
            "--quota-backend-bytes", str(4 * 1024**3),
            *self._tls_flags(),
        ]
        log_file = open(self.dir / "etcd.log", "ab")
        # Its own session: a signal to the agent's process group must not take etcd down with it.
        self._proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        log_file.close()
        self.pidfile.write_text(str(self._proc.pid))
        log.info("started etcd member %s (pid %d, peers %s)", self.name, self._proc.pid, initial_cluster)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            await asyncio.sleep(1)
            if self._proc is not None and self._proc.poll() is None:
                failures = 0
                continue
            if self._proc is None and self._adoptable_pid() is not None:
                continue
            if self._stopping:
                return
            failures += 1
            log.warning("etcd member %s is not running; restarting it (attempt %d)", self.name, failures)
            # With its data directory present, etcd ignores the initial-cluster flags and rejoins as itself.
            self._spawn(f"{self.name}={peer_url(self.ip)}", "existing")
            await asyncio.sleep(min(30, 2**failures))

    async def stop(self, wipe: bool = False) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        pid = self._proc.pid if self._proc is not None else self._adoptable_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(50):
                if self._proc is not None and self._proc.poll() is not None:
                    break
                if self._proc is None and self._adoptable_pid() is None:
                    break
                await asyncio.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pidfile.unlink(missing_ok=True)
        if wipe:
            # The log stays: it is what explains a member that would not start.
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        log.info("stopped etcd member %s%s", self.name, " and removed its data" if wipe else "")
