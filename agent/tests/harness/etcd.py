"""A real single-member etcd on loopback for tests of the store layer."""
from __future__ import annotations

import json
import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

ETCD = "/usr/bin/etcd"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class EtcdTLS:
    """Server certificate and key for the client port; with `client_ca`, clients must present a certificate."""
    cert: Path
    key: Path
    client_ca: Path | None = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Etcd:
    """`with Etcd() as etcd:` starts /usr/bin/etcd on 127.0.0.1, waits for /health, removes everything on exit.

    `client_url` is the base URL of the client port (its v3 JSON gateway is at `client_url + "/v3/..."`).
    With `tls`, the client port speaks HTTPS; `health_context` is then used for the readiness probe
    (e.g. one carrying a client certificate when `tls.client_ca` is set).
    """

    def __init__(self, tls: EtcdTLS | None = None, health_context: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self._health_context = health_context
        self.workdir: Path | None = None
        self.data_dir: Path | None = None
        self.client_url = ""
        self.peer_url = ""
        self._proc: subprocess.Popen | None = None

    def logs(self) -> str:
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "etcd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Etcd:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="swarm-etcd-"))
        self.data_dir = self.workdir / "data"
        # Ports are probed free and then handed to etcd: another process may win the race, so retry.
        for attempt in range(5):
            if self._start_once():
                return
            log.info("etcd attempt %d lost its ports, retrying", attempt + 1)
        raise RuntimeError(f"etcd did not start:\n{self.logs()[-4000:]}")

    def _start_once(self) -> bool:
        assert self.workdir is not None and self.data_dir is not None
        scheme = "https" if self.tls else "http"
        self.client_url = f"{scheme}://127.0.0.1:{_free_port()}"
        self.peer_url = f"http://127.0.0.1:{_free_port()}"
        argv = [
            ETCD, "--name", "test", "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"test={self.peer_url}", "--initial-cluster-state", "new",
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        if self.tls:
            argv += ["--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
            if self.tls.client_ca:
                argv += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.client_ca)]
        # Truncated per attempt: a retry must not read the previous attempt's failure.
        with open(self.workdir / "etcd.log", "wb") as log_file:
            self._proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "address already in use" in self.logs():
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    return False
                raise RuntimeError(f"etcd exited with {self._proc.returncode}:\n{self.logs()[-4000:]}")
            if self._healthy():
                log.info("etcd pid %d ready at %s", self._proc.pid, self.client_url)
                return True
            time.sleep(0.05)
        raise RuntimeError(f"etcd not healthy within {START_TIMEOUT:.0f}s:\n{self.logs()[-4000:]}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=2,
                                        context=self._health_context) as reply:
                return json.loads(reply.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            log.info("etcd pid %d stopped", self._proc.pid)
            self._proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = self.data_dir = None
