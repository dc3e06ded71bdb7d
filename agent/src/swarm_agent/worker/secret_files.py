"""Secrets and configs of this node's tasks as files: in memory only, one directory per task.

The managers send a node the values of the secrets and configs its live tasks use, and no others. Before a
task's container is created they are written into a tmpfs (so they never touch a disk), one directory per
task with each file owned and moded as the task's reference asks, and bind-mounted read-only into the
container: a secret at ``/run/secrets/<target>`` (or an absolute target), a config at ``/<target>``. A task's
directory goes as soon as the task no longer runs here, so a value stays on a node only while a task of
that node needs it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from ..api.models import Mount, SecretFile, Task

log = logging.getLogger(__name__)

SECRETS_DIR = "/run/secrets"
TMPFS_SIZE = "64m"


class MissingValue(Exception):
    """The managers sent no value for a secret or config the task refers to (it was removed meanwhile)."""


def target_path(kind: str, file: SecretFile, fallback: str) -> str:
    name = file.Name or fallback
    if name.startswith("/"):
        return name
    return f"{SECRETS_DIR}/{name}" if kind == "secret" else f"/{name}"


def references(task: Task) -> list[tuple[str, str, str, SecretFile]]:
    """(kind, ID, name, file) for each secret and config the task refers to."""
    spec = task.Spec.ContainerSpec
    out = [("secret", r.SecretID, r.SecretName, r.File or SecretFile(Name=r.SecretName)) for r in spec.Secrets or []]
    out += [("config", r.ConfigID, r.ConfigName, r.File or SecretFile(Name=r.ConfigName)) for r in spec.Configs or []]
    return out


class TaskFiles:
    """The tmpfs at ``root`` holding the files of this node's tasks."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _mount(self) -> None:
        if os.path.ismount(self.root):
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0700,size={TMPFS_SIZE}", "tmpfs", str(self.root)],
                       check=True, capture_output=True, text=True)
        log.info("mounted a tmpfs for task secrets at %s", self.root)

    def prepare(self, task: Task, values: dict[str, dict[str, bytes]]) -> list[Mount]:
        """Write the task's files (once; values never change) and return the bind mounts for its container."""
        refs = references(task)
        if not refs:
            return []
        for kind, obj_id, name, _ in refs:
            if obj_id not in values.get(kind, {}):
                raise MissingValue(f"{kind} {name} ({obj_id}) is not available: it may have been removed")
        self._mount()
        task_dir = self.root / task.ID
        task_dir.mkdir(mode=0o700, exist_ok=True)
        mounts = []
        for index, (kind, obj_id, name, file) in enumerate(refs):
            path = task_dir / f"{kind}-{index}"
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, values[kind][obj_id])
                    os.fchown(fd, int(file.UID), int(file.GID))
                    os.fchmod(fd, file.Mode)
                finally:
                    os.close(fd)
                tmp.replace(path)
            mounts.append(Mount(Type="bind", Source=str(path), Target=target_path(kind, file, name), ReadOnly=True))
        log.info("task %s: %d secret and config files ready", task.ID, len(mounts))
        return mounts

    def sweep(self, keep: set[str]) -> None:
        """Remove the files of every task not in ``keep``."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("task %s: removed its secret and config files", entry.name)

    def destroy(self) -> None:
        """Everything goes, the tmpfs too (the node leaves the swarm)."""
        self.sweep(set())
        if os.path.ismount(self.root):
            subprocess.run(["umount", "-l", str(self.root)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
