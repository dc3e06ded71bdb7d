"""The test harness itself: hosts reach each other over the lab bridge, run containers on their own engines,
survive engine stops and crashes as real machines do, and leave nothing behind."""
from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.etcd import Etcd, EtcdTLS
from harness.hosts import NETNS_DIR, REGISTRY_DIR, Lab, pids_in_cgroup, pids_in_netns, remove_stale_labs

pytestmark = pytest.mark.integration


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def _forward_rules() -> str:
    return subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, check=True, text=True).stdout


def _mounts_under(prefix: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(prefix))]


def _running(pid: int) -> bool:
    """Alive and not a zombie (orphans wait for PID 1 to reap them, which may take a while)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def test_hosts_reach_each_other_and_the_test_process_over_the_bridge(lab: Lab) -> None:
    h1, h2 = lab.add_hosts("h1", "h2", engine=False)

    assert (h1.ip, h2.ip) == (f"{lab.prefix}.11", f"{lab.prefix}.12")
    h1.run("busybox", "ping", "-c", "1", "-W", "2", h2.ip)
    h2.run("busybox", "ping", "-c", "1", "-W", "2", h1.ip)
    # The namespaces are isolated from each other: h1's address is not configured inside h2.
    assert h1.ip not in h2.run("ip", "-4", "addr").stdout.decode()

    web_root = h2.root / "www"
    web_root.mkdir()
    (web_root / "index.html").write_text(f"served by {h2.name}\n")
    server = h2.spawn(["busybox", "httpd", "-f", "-p", "8080", "-h", str(web_root)], "httpd")
    url = f"http://{h2.ip}:8080/index.html"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.read() == b"served by h2\n"
        except OSError:
            return False
    _wait_for(answers, 10, f"httpd on {h2.name}")
    assert h2.logs("httpd") == ""

    lab.cut(h2)
    assert h1.run("busybox", "ping", "-c", "1", "-W", "1", h2.ip, check=False).returncode != 0
    assert not answers()
    lab.heal(h2)
    _wait_for(answers, 10, f"httpd on {h2.name} after the partition healed")

    h2.kill(server, signal.SIGTERM)
    assert server.poll() is not None
    assert not answers()


def test_each_engine_runs_containers_of_its_own(lab: Lab, busybox: tuple[str, Path]) -> None:
    image, archive = busybox
    h1, h2 = lab.add_hosts("h1", "h2", engine_labels={"zone": "lab"})
    ids = set()
    for host in (h1, h2):
        info = json.loads(host.docker("info", "--format", "{{json .}}").stdout)
        assert info["Labels"] == ["zone=lab"]
        ids.add(info["ID"])
        host.load_image(archive)

    assert len(ids) == 2, "engines must have distinct IDs"
    h1.docker("run", "-d", "--name", "web", image, "httpd", "-f", "-p", "80", "-h", "/etc")
    out = h2.docker("run", "--rm", image, "sh", "-c", "echo hello from $(hostname)").stdout.decode()
    assert out.startswith("hello from ")

    assert h1.docker("ps", "--format", "{{.Names}}").stdout.decode().split() == ["web"]
    assert h2.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split() == []

    # Each engine's bridge network lives inside its host's namespace: h1's container answers containers
    # and processes on h1, and is unknown on h2.
    web_ip = h1.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web").stdout.decode().strip()
    assert web_ip.startswith(f"172.30.{h1.index}.")
    page = h1.docker("run", "--rm", image, "wget", "-q", "-O", "-", f"http://{web_ip}/passwd").stdout.decode()
    assert page.startswith("root:x:0:0:")
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://{web_ip}/group', timeout=5).read())"
    assert b"root:x:0:" in h1.run(sys.executable, "-c", fetch).stdout
    assert h2.run("busybox", "ping", "-c", "1", "-W", "1", web_ip, check=False).returncode != 0


def test_engine_stop_kills_containers_and_restart_brings_them_back(lab: Lab, busybox: tuple[str, Path]) -> None:
    image, archive = busybox
    host = lab.add_host("h1", engine_labels={"role": "test"})
    host.load_image(archive)
    host.docker("run", "-d", "--name", "keeper", "--restart", "always", "--stop-timeout", "1",
                image, "sleep", "3600")
    host.docker("run", "-d", "--name", "oneshot", "--stop-timeout", "1", image, "sleep", "3600")
    agent = host.spawn(["busybox", "sleep", "3600"], "agent")
    assert pids_in_cgroup(host.cgroup_parent), "containers run under the host's cgroup parent"

    host.stop_engine()
    assert not host.engine_running
    assert pids_in_cgroup(host.cgroup_parent) == []
    assert agent.poll() is None, "stopping the engine must leave the host's other processes alone"
    assert not host.docker_socket.exists() or host.docker("version", check=False).returncode != 0

    host.start_engine()
    info = json.loads(host.docker("info", "--format", "{{json .}}").stdout)
    assert info["Labels"] == ["role=test"], "labels are kept across restarts"
    _wait_for(lambda: host.docker("inspect", "-f", "{{.State.Running}}", "keeper").stdout.strip() == b"true",
              20, "keeper restarted by its restart policy")
    assert host.docker("inspect", "-f", "{{.State.Running}}", "oneshot").stdout.strip() == b"false"

    # A crash: everything of the engine dies at once, runtime state is gone as after a reboot.
    keeper_pid = int(host.docker("inspect", "-f", "{{.State.Pid}}", "keeper").stdout)
    host.stop_engine(signal.SIGKILL)
    assert not _running(keeper_pid)
    assert pids_in_cgroup(host.cgroup_parent) == []
    assert _mounts_under(host.engine_dir) == []
    assert agent.poll() is None

    host.start_engine()
    _wait_for(lambda: host.docker("inspect", "-f", "{{.State.Running}}", "keeper").stdout.strip() == b"true",
              20, "keeper restarted after the crash")
    assert int(host.docker("inspect", "-f", "{{.State.Pid}}", "keeper").stdout) != keeper_pid
    host.kill(agent)
    assert agent.returncode == -signal.SIGKILL


@pytest.mark.requires("lab")
def test_cleanup_removes_everything(busybox: tuple[str, Path]) -> None:
    image, archive = busybox
    base = Path(tempfile.mkdtemp(prefix="swt-", dir="/tmp"))
    lab = Lab(base)
    try:
        h1, h2 = lab.add_hosts("h1", "h2")
        h1.load_image(archive)
        h1.docker("run", "-d", image, "sleep", "3600")
        h2.spawn(["busybox", "sleep", "3600"], "sleeper")
        names = {"netns": [h.netns for h in lab.hosts], "bridge": lab.bridge,
                 "record": REGISTRY_DIR / f"{lab.lab_id}.json", "cgroups": [h.cgroup_parent for h in lab.hosts]}
        netns_paths = [h.netns_path for h in lab.hosts]
        assert all(pids_in_netns(p) for p in netns_paths)
        assert lab.bridge in _links() and f"-i {lab.bridge} -o {lab.bridge} -j ACCEPT" in _forward_rules()
        assert _mounts_under(base)
    finally:
        lab.cleanup()
    lab.cleanup()  # idempotent

    assert not names["record"].exists()
    assert not any((NETNS_DIR / ns).exists() for ns in names["netns"])
    assert names["bridge"] not in _links()
    assert not any(link.startswith(f"swtv{lab.lab_id}") for link in _links())
    assert lab.bridge not in _forward_rules()
    assert _mounts_under(base) == []
    assert all(pids_in_cgroup(cg) == [] for cg in names["cgroups"])
    assert not any(Path("/sys/fs/cgroup/pids", cg.strip("/")).exists() for cg in names["cgroups"])
    assert not base.exists(), "the lab's base directory is removed once empty"


@pytest.mark.requires("ip", "nsenter", "iptables", "busybox")
def test_stale_labs_of_dead_processes_are_removed() -> None:
    # A child process builds a lab and dies without cleaning up, as a crashed test run would.
    base = Path(tempfile.mkdtemp(prefix="swt-", dir="/tmp"))
    script = (
        "import os, sys; from pathlib import Path; from harness.hosts import Lab\n"
        f"lab = Lab(Path({str(base)!r})); lab.add_hosts('h1', engine=False)\n"
        "lab.hosts[0].spawn(['busybox', 'sleep', '3600'], 'orphan')\n"
        "print(lab.lab_id, lab.bridge, lab.hosts[0].netns, flush=True); os._exit(0)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True,
                             cwd=Path(__file__).parent.parent, timeout=60).stdout
        lab_id, bridge, netns = out.split()
        assert (NETNS_DIR / netns).exists() and bridge in _links()
        assert pids_in_netns(NETNS_DIR / netns), "the orphaned process is still running"

        assert lab_id in remove_stale_labs()

        assert not (NETNS_DIR / netns).exists()
        assert bridge not in _links()
        assert bridge not in _forward_rules()
        assert not (REGISTRY_DIR / f"{lab_id}.json").exists()
        assert not base.exists()
    finally:
        remove_stale_labs()
        shutil.rmtree(base, ignore_errors=True)


def test_live_labs_are_not_touched_by_stale_removal(lab: Lab) -> None:
    host = lab.add_host("h1", engine=False)
    remove_stale_labs()
    assert host.netns_path.exists() and lab.bridge in _links()
    host.run("busybox", "ping", "-c", "1", "-W", "2", lab.gateway)


@pytest.mark.requires("etcd")
def test_etcd_serves_the_v3_json_gateway() -> None:
    with Etcd() as etcd:
        request = urllib.request.Request(f"{etcd.client_url}/v3/kv/put", method="POST",
                                         data=json.dumps({"key": "Zm9v", "value": "YmFy"}).encode())
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert "header" in json.loads(reply.read())
        request = urllib.request.Request(f"{etcd.client_url}/v3/kv/range", method="POST",
                                         data=json.dumps({"key": "Zm9v"}).encode())
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert json.loads(reply.read())["kvs"][0]["value"] == "YmFy"
        workdir = etcd.workdir
        assert workdir is not None and workdir.exists()
    assert not workdir.exists()


def _issue(subject: str, issuer_key: ec.EllipticCurvePrivateKey, issuer_name: x509.Name | None,
           key: ec.EllipticCurvePrivateKey, *, ca: bool, ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.mark.requires("etcd")
def test_etcd_with_mutual_tls(tmp_path: Path) -> None:
    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test CA", ca_key, None, ca_key, ca=True)
    ca_path, _ = write("ca", ca, ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server_cert, server_key_path = write(
        "server", _issue("etcd", ca_key, ca.subject, server_key, ca=False, ip="127.0.0.1"), server_key)
    client_cert, client_key_path = write(
        "client", _issue("client", ca_key, ca.subject, client_key, ca=False), client_key)

    with_cert = ssl.create_default_context(cafile=str(ca_path))
    with_cert.load_cert_chain(str(client_cert), str(client_key_path))
    without_cert = ssl.create_default_context(cafile=str(ca_path))

    with Etcd(tls=EtcdTLS(cert=server_cert, key=server_key_path, client_ca=ca_path),
              health_context=with_cert) as etcd:
        assert etcd.client_url.startswith("https://127.0.0.1:")
        with urllib.request.urlopen(f"{etcd.client_url}/health", context=with_cert, timeout=5) as reply:
            assert json.loads(reply.read())["health"] == "true"
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"{etcd.client_url}/health", context=without_cert, timeout=5).read()


def test_etcd_fixture_is_usable(etcd: Etcd) -> None:
    with urllib.request.urlopen(f"{etcd.client_url}/version", timeout=5) as reply:
        assert json.loads(reply.read())["etcdserver"].startswith("3.")
