"""The workload image of the tests, `local/busybox:1`, built without a registry or an engine.

The image is one layer: the static busybox binary in /bin with links for the applets the tests use.
It is written directly in `docker save` format (manifest.json, image config, layer tar), which
`docker load` accepts; every timestamp is fixed, so the same busybox always gives the same image ID.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE = "local/busybox:1"
# Shared by the tests, the benchmarks and the sandbox playbook (and so the demo), so the archive is built once.
CACHE_DIR = Path("/var/tmp/swarm-test-cache")
BUSYBOX = Path("/usr/bin/busybox")
APPLETS = (
    "sh", "httpd", "sleep", "nslookup", "wget", "cat", "echo", "ls", "ps", "hostname", "true", "false",
    "kill", "env",
    # Beyond the minimum: what tests reach for when probing the network or the filesystem from a task.
    "nc", "ping", "ip", "ifconfig", "netstat", "mkdir", "rm", "touch", "grep", "head", "tail", "wc",
    "date", "test", "[", "printf", "id", "uname", "timeout", "seq", "sed", "awk", "cp", "mv", "ln",
    "pwd", "chmod", "sync",
)
# Bump when the image's content or layout changes, so that cached archives are rebuilt.
LAYOUT_VERSION = "1"
_EPOCH = "1970-01-01T00:00:00Z"


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x"}.get(machine, machine)


def _tar_member(name: str, kind: bytes, mode: int, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _layer(busybox: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777),
                                ("var", 0o755), ("var/www", 0o755)):
            tar.addfile(_tar_member(directory, tarfile.DIRTYPE, mode))
        tar.addfile(_tar_member("bin/busybox", tarfile.REGTYPE, 0o755, size=len(busybox)),
                    io.BytesIO(busybox))
        for applet in sorted(set(APPLETS)):
            tar.addfile(_tar_member(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        group = b"root:x:0:\nnogroup:x:65534:\n"
        for name, content in (("etc/passwd", passwd), ("etc/group", group)):
            tar.addfile(_tar_member(name, tarfile.REGTYPE, 0o644, size=len(content)), io.BytesIO(content))
    return out.getvalue()


def _save_archive(layer: bytes) -> bytes:
    diff_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": _architecture(),
        "os": "linux",
        "created": _EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": _EPOCH, "created_by": "swarm test harness: static busybox with applet links"}],
    }, sort_keys=True).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_id}.json", "RepoTags": [IMAGE],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    repository, tag = IMAGE.rsplit(":", 1)
    repositories = json.dumps({repository: {tag: diff_id}}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_member(diff_id, tarfile.DIRTYPE, 0o755))
        for name, content in ((f"{diff_id}/VERSION", b"1.0"), (f"{diff_id}/layer.tar", layer),
                              (f"{config_id}.json", config), ("manifest.json", manifest),
                              ("repositories", repositories)):
            tar.addfile(_tar_member(name, tarfile.REGTYPE, 0o644, size=len(content)), io.BytesIO(content))
    return out.getvalue()


def busybox_image(cache_dir: Path = CACHE_DIR) -> tuple[str, Path]:
    """Return (image name, path of its `docker save` archive), building the archive once per busybox binary."""
    busybox = BUSYBOX.read_bytes()
    key = hashlib.sha256(busybox + LAYOUT_VERSION.encode() + "\0".join(APPLETS).encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / f"busybox-{key}.tar"
    if archive.exists():
        return IMAGE, archive
    data = _save_archive(_layer(busybox))
    # Written aside and renamed, so a concurrent run never loads a half-written archive.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".busybox-", suffix=".tar")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, archive)
    log.info("built image archive %s for %s (%d bytes)", archive, IMAGE, len(data))
    return IMAGE, archive
