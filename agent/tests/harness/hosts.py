"""Test hosts: network namespaces on a private bridge, each with its own Docker engine.

A `Lab` owns one Linux bridge in the root namespace; every `Host` is a network namespace plugged into it
with a veth pair, and may run its own containerd + dockerd (data under the host's private directory).
The test process sits in the root namespace and reaches every host at its address through the bridge.

Everything a lab creates is written down in a registry file under /run, so a later session can remove
what a crashed run left behind (`remove_stale_labs`) without touching labs of runs that are still alive.
"""
from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NAME_PREFIX = "swt"
REGISTRY_DIR = Path("/run/swarm-test-labs")
NETNS_DIR = Path("/var/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
DOCKER_CLI = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
LAB_SUBNETS = ipaddress.ip_network("172.29.0.0/16")
FIRST_HOST_OCTET = 11
ENGINE_START_TIMEOUT = 90.0
# dockerd waits this long for containers to stop on SIGTERM; short, because tests stop engines often.
ENGINE_SHUTDOWN_TIMEOUT = 5
# Programs that make up an engine; the host's agents run in the same namespace and must survive stop_engine.
ENGINE_PROGRAMS = frozenset({
    "dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2",
    "runc", "docker-proxy", "docker-init",
})
# Environment variables that would point the docker CLI somewhere other than the host's engine.
DOCKER_CLI_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


class CommandFailed(subprocess.CalledProcessError):
    """A command exited non-zero; unlike CalledProcessError, its message carries the output."""

    def __str__(self) -> str:
        def text(data: bytes | str | None) -> str:
            if data is None:
                return ""
            return data.decode(errors="replace") if isinstance(data, bytes) else data
        return (f"{super().__str__()}\n--- stdout ---\n{text(self.stdout)[-4000:]}"
                f"\n--- stderr ---\n{text(self.stderr)[-4000:]}")


def _run(argv: list[str], check: bool = True, timeout: float = 60,
         input: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, timeout=timeout, input=input, env=env)
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, argv, result.stdout, result.stderr)
    return result


def _quiet(action: str, fn: Callable[[], object]) -> None:
    """Run one cleanup step; a failing step is logged and must not stop the steps after it."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - cleanup never raises, but says what it could not do
        log.warning("cleanup step failed: %s", action, exc_info=True)


# ---------------------------------------------------------------------------------------------------------
# Processes, cgroups and mounts belonging to a host

def _process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot: with the pid it identifies a process even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start_time: int | None) -> bool:
    current = _process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def pids_in_netns(netns_path: Path) -> list[int]:
    """Every process (other than ourselves) whose network namespace is the one bound at netns_path."""
    try:
        target = os.stat(netns_path)
    except OSError:
        return []
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue  # exited, or a zombie without namespaces
        if (ns.st_ino, ns.st_dev) == (target.st_ino, target.st_dev):
            found.append(int(entry.name))
    return found


def _program_name(pid: int) -> str:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
    return os.path.basename(exe.removesuffix(" (deleted)"))


def _cgroup_dirs(cgroup_parent: str) -> list[Path]:
    """The cgroup-parent's directory in every mounted hierarchy (cgroups v1 has one per controller)."""
    if not CGROUP_ROOT.is_dir():
        return []
    relative = cgroup_parent.strip("/")
    tops = [CGROUP_ROOT] + [h for h in CGROUP_ROOT.iterdir() if h.is_dir()]
    return [top / relative for top in tops if (top / relative).is_dir()]


def pids_in_cgroup(cgroup_parent: str) -> list[int]:
    """Processes of every container an engine started under its --cgroup-parent."""
    pids: set[int] = set()
    for top in _cgroup_dirs(cgroup_parent):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return sorted(pids)


def _remove_cgroup(cgroup_parent: str) -> None:
    for top in _cgroup_dirs(cgroup_parent):
        # Children first: a cgroup directory can only be removed once it has no sub-cgroups.
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True) + [top]:
            try:
                directory.rmdir()
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", directory, exc)


def _kill_until_gone(find: Callable[[], list[int]], what: str, timeout: float = 20.0) -> None:
    """SIGKILL what `find` returns until it returns nothing: containers may fork while being killed."""
    deadline = time.monotonic() + timeout
    while pids := find():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            log.warning("processes of %s still alive after %.0fs: %s", what, timeout, pids)
            return
        time.sleep(0.05)


def _mount_points_under(prefix: Path) -> list[str]:
    prefix_text = str(prefix).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # mountinfo escapes blanks as \040
        if point == prefix_text or point.startswith(prefix_text + "/"):
            points.append(point)
    return points


def unmount_under(prefix: Path) -> None:
    """Lazily unmount everything mounted at or below prefix, deepest first (overlays, netns binds, ...)."""
    for _ in range(5):  # a mount point can be stacked several times
        points = _mount_points_under(prefix)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            if _libc.umount2(point.encode(), _MNT_DETACH) != 0:
                log.warning("could not unmount %s: %s", point, os.strerror(ctypes.get_errno()))


def _reap(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _docker_ping(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] and reply.endswith(b"OK")


def _unix_socket_answers(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(socket_path))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------
# The registry of labs, for removing what crashed runs left behind

@dataclass
class _HostRecord:
    name: str
    netns: str
    veth: str
    cgroup_parent: str
    root: str


@dataclass
class _LabRecord:
    lab_id: str
    owner_pid: int
    owner_start: int | None
    bridge: str
    prefix: str
    base: str = ""
    hosts: list[_HostRecord] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return REGISTRY_DIR / f"{self.lab_id}.json"

    def save(self) -> None:
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> _LabRecord:
        data = json.loads(path.read_text())
        data["hosts"] = [_HostRecord(**h) for h in data.get("hosts", [])]
        return cls(**data)

    def owner_alive(self) -> bool:
        return _alive(self.owner_pid, self.owner_start)


@contextmanager
def _registry_lock() -> Iterator[None]:
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    with open(REGISTRY_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lab_records() -> list[_LabRecord]:
    records = []
    for path in REGISTRY_DIR.glob("*.json") if REGISTRY_DIR.is_dir() else []:
        try:
            records.append(_LabRecord.load(path))
        except (OSError, ValueError, TypeError):
            log.warning("unreadable lab record %s removed", path)
            path.unlink(missing_ok=True)
    return records


def _used_subnets() -> set[ipaddress.IPv4Network]:
    """Subnets of the root namespace's interfaces, and those live labs have claimed (maybe not yet created)."""
    used = {ipaddress.ip_network(f"{r.prefix}.0/24") for r in _lab_records() if r.owner_alive()}
    for iface in json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or b"[]"):
        for addr in iface.get("addr_info", []):
            used.add(ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return used


def _choose_prefix(wanted: str | None) -> str:
    used = _used_subnets()
    if wanted is not None:
        subnet = ipaddress.ip_network(f"{wanted}.0/24")
        if any(subnet.overlaps(u) for u in used):
            raise ValueError(f"subnet {subnet} is already in use on this machine")
        return wanted
    for subnet in LAB_SUBNETS.subnets(new_prefix=24):
        if not any(subnet.overlaps(u) for u in used):
            return str(subnet.network_address).rsplit(".", 1)[0]
    raise RuntimeError(f"no free /24 left in {LAB_SUBNETS} for a test lab")


def _forward_rule(action: str, bridge: str) -> subprocess.CompletedProcess:
    """Insert (-I) or delete (-D) the rule accepting traffic across the bridge; -w waits for the xtables lock."""
    return _run(["iptables", "-w", action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], check=False)


def _teardown(record: _LabRecord) -> None:
    """Remove everything a lab record names; each step on its own so one failure does not leak the rest."""
    for host in record.hosts:
        netns_path = NETNS_DIR / host.netns
        _quiet(f"kill processes of host {host.name}", lambda: _kill_until_gone(
            lambda: pids_in_netns(netns_path) + pids_in_cgroup(host.cgroup_parent), f"host {host.name}"))
        _quiet(f"unmount under {host.root}", lambda: unmount_under(Path(host.root)))
        _quiet(f"remove cgroup {host.cgroup_parent}", lambda: _remove_cgroup(host.cgroup_parent))
        _quiet(f"delete netns {host.netns}", lambda: _run(["ip", "netns", "delete", host.netns], check=False))
        _quiet(f"delete veth {host.veth}", lambda: _run(["ip", "link", "delete", host.veth], check=False))
        _quiet(f"remove {host.root}", lambda: shutil.rmtree(host.root, ignore_errors=True))
    if record.base:
        # Only when empty: the base belongs to the caller, who may keep files of its own there.
        _quiet(f"remove {record.base} if empty", lambda: os.path.isdir(record.base) and not os.listdir(
            record.base) and os.rmdir(record.base))

    def drop_forward_rules() -> None:
        while _forward_rule("-D", record.bridge).returncode == 0:
            pass
    _quiet(f"remove FORWARD rule of {record.bridge}", drop_forward_rules)
    _quiet(f"delete bridge {record.bridge}", lambda: _run(["ip", "link", "delete", record.bridge], check=False))
    record.path.unlink(missing_ok=True)


def remove_stale_labs() -> list[str]:
    """Remove labs whose owning process is gone, and harness-named objects that no live lab claims.

    Returns the ids of the labs removed. Safe to call while other test runs have live labs.
    """
    removed = []
    with _registry_lock():
        records = _lab_records()
        live = [r for r in records if r.owner_alive()]
        for record in records:
            if record not in live:
                log.info("removing lab %s left behind by dead process %d", record.lab_id, record.owner_pid)
                _teardown(record)
                removed.append(record.lab_id)
        # Objects of a run whose registry file was lost (e.g. /run wiped) carry the prefix but no record.
        live_netns = {h.netns for r in live for h in r.hosts}
        live_links = {r.bridge for r in live} | {h.veth for r in live for h in r.hosts}
        for netns in os.listdir(NETNS_DIR) if NETNS_DIR.is_dir() else []:
            if netns.startswith(NAME_PREFIX + "-") and netns not in live_netns:
                log.info("removing orphaned netns %s", netns)
                _kill_until_gone(lambda: pids_in_netns(NETNS_DIR / netns), f"netns {netns}")
                _run(["ip", "netns", "delete", netns], check=False)
        for link in json.loads(_run(["ip", "-j", "link", "show"]).stdout or b"[]"):
            name = link.get("ifname", "")
            if name.startswith((NAME_PREFIX + "b", NAME_PREFIX + "v")) and name not in live_links:
                log.info("removing orphaned link %s", name)
                _run(["ip", "link", "delete", name], check=False)
                while _forward_rule("-D", name).returncode == 0:
                    pass
    return removed


# ---------------------------------------------------------------------------------------------------------
# Hosts and labs

class Host:
    """One test host: a network namespace on the lab bridge, a private directory, optionally a Docker engine."""

    def __init__(self, record: _HostRecord, index: int, ip: str) -> None:
        self.name = record.name
        self.ip = ip
        self.netns = record.netns
        self.root = Path(record.root)
        self.index = index
        self._record = record
        self._procs: list[subprocess.Popen] = []
        self._engine_labels: dict[str, str] = {}
        self._dockerd: subprocess.Popen | None = None
        self._containerd: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ip={self.ip!r}, netns={self.netns!r})"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def engine_dir(self) -> Path:
        return self.root / "engine"

    @property
    def docker_socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_url(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def cgroup_parent(self) -> str:
        return self._record.cgroup_parent

    @property
    def engine_running(self) -> bool:
        return self._dockerd is not None and self._dockerd.poll() is None

    # -- commands and processes in the namespace --------------------------------------------------------

    def _in_netns(self, argv: list[str]) -> list[str]:
        # nsenter rather than `ip netns exec`: the latter remounts /sys and hides the cgroup mounts.
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run argv inside the host's network namespace and wait for it; output is captured."""
        return _run(self._in_netns(list(argv)), check=check, timeout=timeout, input=input)

    def spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running process in the namespace; stdout+stderr go to root/<log_name>.log.

        `env` is added to this process's environment. The process is killed by `Lab.cleanup` at the latest.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{log_name}.log", "ab") as log_file:
            proc = subprocess.Popen(self._in_netns(argv), stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                    start_new_session=True)
        self._procs.append(proc)
        log.info("host %s started %s as pid %d (log %s.log)", self.name, argv[0], proc.pid, log_name)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Signal a spawned process and wait for it; SIGKILL follows if it outlives the timeout."""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("host %s: pid %d ignored signal %s for %.0fs, killing it",
                            self.name, proc.pid, signal.Signals(sig).name, timeout)
                proc.kill()
                proc.wait(timeout=timeout)
        if proc in self._procs:
            self._procs.remove(proc)
        log.info("host %s: pid %d ended with %s", self.name, proc.pid, proc.returncode)

    def logs(self, log_name: str) -> str:
        try:
            return (self.root / f"{log_name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- the Docker engine --------------------------------------------------------------------------------

    def start_engine(self, labels: dict[str, str] | None = None) -> None:
        """Start containerd and dockerd in the namespace and wait until the engine answers /_ping.

        Labels become engine labels (`docker info` Labels) and are kept for later restarts.
        """
        if self.engine_running:
            raise RuntimeError(f"engine of host {self.name} is already running")
        if labels is not None:
            self._engine_labels = dict(labels)
        started = time.monotonic()
        self._start_containerd()
        d = self.engine_dir
        (d / "daemon.json").write_text(json.dumps({
            # Without this every engine shares /etc/docker/key.json and so the same engine ID.
            "deprecated-key-path": str(d / "key.json"),
        }))
        argv = [
            DOCKERD,
            "--config-file", str(d / "daemon.json"),
            "--data-root", str(d / "data"),
            "--exec-root", str(d / "run"),
            "--pidfile", str(d / "dockerd.pid"),
            "-H", self.docker_url,
            "--containerd", str(self._containerd_socket),
            "--bip", f"172.30.{self.index}.1/24",
            "--cgroup-parent", self.cgroup_parent,
            "--iptables=true",
            "--shutdown-timeout", str(ENGINE_SHUTDOWN_TIMEOUT),
        ]
        for key, value in sorted(self._engine_labels.items()):
            argv += ["--label", f"{key}={value}"]
        self._dockerd = self.spawn(argv, "dockerd")
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while not _docker_ping(self.docker_socket):
            if self._dockerd.poll() is not None:
                raise RuntimeError(f"dockerd of host {self.name} exited with {self._dockerd.returncode}:\n"
                                   f"{self.logs('dockerd')[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd of host {self.name} did not answer within "
                                   f"{ENGINE_START_TIMEOUT:.0f}s:\n{self.logs('dockerd')[-4000:]}")
            time.sleep(0.05)
        log.info("engine of host %s ready in %.1fs at %s", self.name, time.monotonic() - started,
                 self.docker_url)

    @property
    def _containerd_socket(self) -> Path:
        return self.engine_dir / "containerd.sock"

    def _start_containerd(self) -> None:
        # Our own containerd per host, rather than dockerd's managed one: dockerd silently shares a system
        # containerd whenever /run/containerd/containerd.sock exists, which would merge the hosts' engines.
        d = self.engine_dir
        d.mkdir(parents=True, exist_ok=True)
        self._containerd_socket.unlink(missing_ok=True)
        (d / "containerd.toml").write_text("\n".join([
            "version = 2",
            f'root = "{d / "containerd"}"',
            f'state = "{d / "run" / "containerd"}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            f'  address = "{self._containerd_socket}"',
            "[plugins.\"io.containerd.internal.v1.opt\"]",
            f'  path = "{d / "opt"}"',
            "",
        ]))
        self._containerd = self.spawn([CONTAINERD, "--config", str(d / "containerd.toml")], "containerd")
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while not _unix_socket_answers(self._containerd_socket):
            if self._containerd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd of host {self.name} did not start:\n"
                                   f"{self.logs('containerd')[-4000:]}")
            time.sleep(0.02)

    def _engine_pids(self) -> list[int]:
        in_netns = [p for p in pids_in_netns(self.netns_path) if _program_name(p) in ENGINE_PROGRAMS]
        return in_netns + pids_in_cgroup(self.cgroup_parent)

    def stop_engine(self, sig: int = signal.SIGTERM) -> None:
        """Stop the engine so that its containers really die.

        SIGTERM: dockerd stops its containers and exits, then containerd; leftovers are killed.
        SIGKILL: a crash or power loss: dockerd, containerd, shims and containers die at once, and the
        engine's runtime state (what would sit on a tmpfs /run) is wiped, as after a reboot.
        """
        if sig == signal.SIGKILL:
            _kill_until_gone(self._engine_pids, f"engine of host {self.name}")
        else:
            for proc in (self._dockerd, self._containerd):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(sig)
                    try:
                        proc.wait(timeout=ENGINE_SHUTDOWN_TIMEOUT + 30)
                    except subprocess.TimeoutExpired:
                        log.warning("host %s: %s ignored %s, killing it", self.name, proc.args[3],
                                    signal.Signals(sig).name)
            _kill_until_gone(self._engine_pids, f"engine of host {self.name}")
        for proc in (self._dockerd, self._containerd):
            if proc is not None:
                _reap(proc)
                if proc in self._procs:
                    self._procs.remove(proc)
        self._dockerd = self._containerd = None
        unmount_under(self.engine_dir)
        (self.engine_dir / "dockerd.pid").unlink(missing_ok=True)
        if sig == signal.SIGKILL:
            shutil.rmtree(self.engine_dir / "run", ignore_errors=True)
        log.info("engine of host %s stopped with %s", self.name, signal.Signals(sig).name)

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run the docker CLI (20.10) against this host's engine."""
        env = {k: v for k, v in os.environ.items() if k not in DOCKER_CLI_ENV}
        return _run([DOCKER_CLI, "-H", self.docker_url, *args], check=check, timeout=timeout,
                    input=input, env=env)

    def load_image(self, tar_path: Path) -> None:
        self.docker("load", "-i", str(tar_path))
        log.info("host %s loaded image archive %s", self.name, tar_path)


class Lab:
    """A bridge with test hosts on it. Always call `cleanup` (it is idempotent and never raises)."""

    def __init__(self, base: Path, subnet_prefix: str | None = None) -> None:
        """`subnet_prefix` like "172.29.0"; by default the first 172.29.X/24 not in use on this machine,
        so that several test runs can have labs at the same time."""
        self.base = Path(base)
        self.lab_id = secrets.token_hex(3)
        self.hosts: list[Host] = []
        self._cleaned = False
        with _registry_lock():
            prefix = _choose_prefix(subnet_prefix)
            self._record = _LabRecord(lab_id=self.lab_id, owner_pid=os.getpid(),
                                      owner_start=_process_start_time(os.getpid()),
                                      bridge=f"{NAME_PREFIX}b{self.lab_id}", prefix=prefix,
                                      base=str(self.base))
            self._record.save()  # before creating anything, so that a crash right now leaves a trace
        self.prefix = prefix
        self.bridge = self._record.bridge
        self.gateway = f"{prefix}.1"
        try:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            # Any dockerd on this machine sets FORWARD to DROP with bridge netfilter on: accept our bridge.
            inserted = _forward_rule("-I", self.bridge)
            if inserted.returncode != 0:
                raise CommandFailed(inserted.returncode, inserted.args, inserted.stdout, inserted.stderr)
        except Exception:
            self.cleanup()
            raise
        log.info("lab %s created: bridge %s, subnet %s.0/24", self.lab_id, self.bridge, prefix)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def add_host(self, name: str, engine: bool = True, engine_labels: dict[str, str] | None = None) -> Host:
        return self.add_hosts(name, engine=engine, engine_labels=engine_labels)[0]

    def add_hosts(self, *names: str, engine: bool = True,
                  engine_labels: dict[str, str] | None = None) -> list[Host]:
        """Add several hosts; their engines start in parallel (each takes a second or two)."""
        hosts = [self._create_host(name) for name in names]
        if engine:
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                for future in [pool.submit(h.start_engine, engine_labels) for h in hosts]:
                    future.result()
        return hosts

    def _create_host(self, name: str) -> Host:
        if any(h.name == name for h in self.hosts):
            raise ValueError(f"lab {self.lab_id} already has a host named {name}")
        index = len(self.hosts) + 1
        octet = FIRST_HOST_OCTET + len(self.hosts)
        if octet > 254:
            raise ValueError(f"lab {self.lab_id} is full")
        record = _HostRecord(name=name, netns=f"{NAME_PREFIX}-{self.lab_id}-{name}",
                             veth=f"{NAME_PREFIX}v{self.lab_id}{index:02d}",
                             cgroup_parent=f"/{NAME_PREFIX}-{self.lab_id}-{name}",
                             root=str(self.base / name))
        with _registry_lock():
            self._record.hosts.append(record)
            self._record.save()
        host = Host(record, index, f"{self.prefix}.{octet}")
        self.hosts.append(host)
        host.root.mkdir(parents=True, exist_ok=True)
        peer = f"{NAME_PREFIX}p{self.lab_id}{index:02d}"
        ns = record.netns
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", record.veth, "type", "veth", "peer", "name", peer])
        _run(["ip", "link", "set", peer, "netns", ns])
        _run(["ip", "link", "set", record.veth, "master", self.bridge, "up"])
        _run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
        _run(["ip", "-n", ns, "addr", "add", f"{host.ip}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", ns, "route", "add", "default", "via", self.gateway])
        log.info("host %s created: netns %s, address %s", name, ns, host.ip)
        return host

    def cut(self, host: Host) -> None:
        """Partition the host from the lab (and from the test process) by taking its veth down."""
        _run(["ip", "link", "set", host._record.veth, "down"])
        log.info("host %s cut off from lab %s", host.name, self.lab_id)

    def heal(self, host: Host) -> None:
        _run(["ip", "link", "set", host._record.veth, "up"])
        log.info("host %s reconnected to lab %s", host.name, self.lab_id)

    def cleanup(self) -> None:
        """Kill every process, stop engines, unmount, delete namespaces, links, rules and host directories."""
        if self._cleaned:
            return
        self._cleaned = True
        for host in self.hosts:
            for proc in list(host._procs):
                _quiet(f"kill pid {proc.pid} of host {host.name}", lambda: (proc.kill(), _reap(proc)))
            host._procs.clear()
            host._dockerd = host._containerd = None
        _teardown(self._record)
        log.info("lab %s removed", self.lab_id)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
