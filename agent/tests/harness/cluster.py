"""Swarm nodes on lab hosts: a real ``swarmd`` in each host's namespace, driven by the real ``docker`` CLI."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import signal
import subprocess
import sys
import time
from datetime import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from swarm_agent import pki
from swarm_agent.manager.etcd_member import CLIENT_PORT, client_tls
from swarm_agent.store.etcd import EtcdClient

from .hosts import DOCKER_CLI, Host

log = logging.getLogger(__name__)

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as exc:  # a probe may fail while the cluster converges
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class SwarmNode:
    """One agent on one lab host; ``docker(...)`` runs the docker CLI against the agent's socket."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.data_dir = host.root / "swarm"
        self.socket = host.root / "swarm.sock"
        self.proc: subprocess.Popen | None = None
        self.node_id = ""

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def addr(self) -> str:
        return f"{self.host.ip}:2377"

    def start(self, *options: str) -> None:
        """Start the agent; ``options`` are more ``swarmd`` options."""
        argv = [
            sys.executable, "-m", "swarm_agent.cli.swarmd",
            "--data-dir", str(self.data_dir),
            "--socket", str(self.socket),
            "--docker-host", self.host.docker_url,
            "--hostname", self.host.name,
            *options,
        ]
        self.proc = self.host.spawn(argv, "swarmd")
        wait_for(f"agent on {self.name} to serve its socket", lambda: self._ping(), timeout=30)

    def _ping(self) -> bool:
        return self.socket.exists() and self.docker("version", "--format", "{{.Server.APIVersion}}", check=False).returncode == 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the agent only (its etcd member and containers live on, as after a crash of the agent)."""
        assert self.proc is not None
        self.host.kill(self.proc, sig)
        self.proc = None

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [DOCKER_CLI, "-H", f"unix://{self.socket}", *args],
            capture_output=True, text=True, timeout=timeout, check=False, input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} on {self.name} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def api(self, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, Any]:
        """One raw request to the agent's API (``path`` without the version; ``/swarmd/`` ones have none): (status, body)."""
        conn = _UnixHTTP(self.socket)
        try:
            payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path if path.startswith("/swarmd/") else "/v1.41" + path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return resp.status, (json.loads(data) if data.strip() else {})

    def json(self, *args: str) -> Any:
        return json.loads(self.docker(*args).stdout)

    def init(self, *options: str) -> str:
        """``docker swarm init`` on this node, with more of its ``options`` (``--cert-expiry 1h``)."""
        self.node_id = self.docker("swarm", "init", "--advertise-addr", self.host.ip, *options).stdout
        self.node_id = self.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        return self.node_id

    def join(self, manager: SwarmNode, role: str = "worker") -> str:
        token = manager.docker("swarm", "join-token", "-q", role).stdout.strip()
        self.docker("swarm", "join", "--token", token, "--advertise-addr", self.host.ip, manager.addr)
        self.node_id = self.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        return self.node_id

    def container_ids(self) -> dict[str, str]:
        """Task containers on this host's engine: container name -> started-at."""
        out = self.host.docker(
            "ps", "-a", "--filter", "label=com.docker.swarm.task.id", "--format", "{{.Names}}"
        ).stdout.split()
        started = {}
        for name in out:
            started[name] = self.host.docker("inspect", "--format", "{{.State.StartedAt}}", name).stdout.strip()
        return started


def etcd_of(manager: SwarmNode) -> EtcdClient:
    """A client of ``manager``'s etcd member, as whoever holds its disk could make one (its etcd certificate)."""
    certs = pki.NodeCerts.load(manager.data_dir)
    assert certs is not None, f"{manager.name} holds no certificates"
    return EtcdClient([f"https://{manager.host.ip}:{CLIENT_PORT}"], client_tls(certs))


def form_swarm(hosts: list[Host], *options: str, init: tuple[str, ...] = ()) -> list[SwarmNode]:
    """Agents on ``hosts`` started with swarmd ``options``; the first inits a swarm (with ``init`` options of
    ``docker swarm init``) and the others join it as workers."""
    nodes = [SwarmNode(h) for h in hosts]
    for node in nodes:
        node.start(*options)
    nodes[0].init(*init)
    for node in nodes[1:]:
        node.join(nodes[0])
    return nodes


def running_tasks(manager: SwarmNode, service: str) -> list[dict[str, Any]]:
    """Tasks of ``service`` that are running and meant to be, as ``docker service ps`` would show them."""
    ids = manager.docker(
        "service", "ps", service, "-q", "--no-trunc", "--filter", "desired-state=running"
    ).stdout.split()
    if not ids:
        return []
    tasks = manager.json("inspect", "--type", "task", *ids) if ids else []
    return [t for t in tasks if t["Status"]["State"] == "running"]


def node_of_task(manager: SwarmNode, task: dict[str, Any]) -> str:
    return manager.docker("node", "inspect", "--format", "{{.Description.Hostname}}", task["NodeID"]).stdout.strip()


def spread(manager: SwarmNode, service: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in running_tasks(manager, service):
        host = node_of_task(manager, task)
        counts[host] = counts.get(host, 0) + 1
    return counts


def agent_log(node: SwarmNode) -> str:
    return node.host.logs("swarmd")



def go_time(stamp: str) -> float:
    """Seconds since the epoch of a Go timestamp (nanoseconds, Z); Python reads microseconds."""
    head, _, rest = stamp.strip().rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(rest + '000000')[:6]}+00:00").timestamp()


def service_tasks(manager: SwarmNode, service: str) -> list[dict[str, Any]]:
    """Every task of ``service``, history included, as ``docker inspect --type task`` shows them."""
    ids = manager.docker("service", "ps", "-q", "--no-trunc", service).stdout.split()
    return manager.json("inspect", "--type", "task", *ids) if ids else []


def start_agent(host: Host, archive: Path) -> SwarmNode:
    """An agent on ``host``, with the image ``archive`` loaded into its engine, in no swarm yet."""
    host.load_image(archive)
    node = SwarmNode(host)
    node.start()
    return node


def start_cluster(hosts: list[Host], archive: Path, *, tags: tuple[str, ...] = (), image: str = "",
                  drain_manager: bool = False) -> list[SwarmNode]:
    """A swarm on ``hosts``: the first inits it as manager, the others join as workers, all Ready.

    Every host loads the image ``archive``, and tags ``image`` as each of ``tags`` (a second image
    for updates, without a registry).
    """
    nodes = [SwarmNode(h) for h in hosts]
    for host, node in zip(hosts, nodes):
        host.load_image(archive)
        for tag in tags:
            host.docker("tag", image, tag)
        node.start()
    manager = nodes[0]
    manager.init()
    if drain_manager:
        manager.docker("node", "update", "--availability", "drain", manager.name)
    for worker in nodes[1:]:
        worker.join(manager)
    wait_for(f"{len(nodes)} nodes Ready",
             lambda: manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split().count("Ready") == len(nodes))
    return nodes


# A web task that answers with its hostname (its container's short ID), so a client sees which task it reached.
HOSTNAME_WEB = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


def http_get(ip: str, port: int, timeout: float = 2) -> str | None:
    """GET http://ip:port/ from this (the lab's root) namespace: the body, or None when the request fails."""
    done = subprocess.run(["curl", "-s", "-m", str(timeout), f"http://{ip}:{port}/"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def fetch_in(host: Host, container: str, url: str) -> tuple[int, str]:
    """GET ``url`` from inside a container of ``host``'s engine: (exit code, body)."""
    # busybox's own wget -T crashes; timeout(1) bounds it instead.
    done = host.docker("exec", container, "timeout", "5", "wget", "-q", "-O", "-", url, check=False)
    return done.returncode, done.stdout.decode().strip()
