"""Choose the routing mesh's backend at agent start, and say which and why."""
from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from typing import Protocol

from .ipvs import IpvsMesh, ipvs_available
from .model import MeshState
from .nftables import NftablesMesh

log = logging.getLogger(__name__)

BACKENDS = ("nftables", "ipvs")


class MeshBackend(Protocol):
    name: str

    def full(self, desired: MeshState) -> None: ...

    def apply(self, desired: MeshState) -> None: ...

    def reconcile_on_start(self, desired: MeshState) -> None: ...


class NoMeshBackend(RuntimeError):
    """Neither nftables nor IPVS can be used on this host."""


def nftables_available(nft_command: Sequence[str] = ("nft",)) -> tuple[bool, str]:
    """Whether nft runs and can read the kernel's ruleset, and why not when it cannot."""
    if shutil.which(nft_command[0]) is None:
        return False, f"{nft_command[0]} is not installed"
    done = subprocess.run([*nft_command, "list", "tables"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return False, f"nft cannot list the ruleset ({done.stderr.strip()})"
    return True, "nft reads the kernel's ruleset"


def choose_backend(prefer: str | None, nft_command: Sequence[str] = ("nft",)) -> MeshBackend:
    """nftables unless `prefer` is "ipvs" and the kernel has IPVS; the other one when the first cannot work."""
    if prefer is not None and prefer not in BACKENDS:
        raise ValueError(f"mesh backend {prefer!r} is not one of {', '.join(BACKENDS)}")
    order = ["ipvs", "nftables"] if prefer == "ipvs" else ["nftables", "ipvs"]
    reasons: list[str] = []
    for name in order:
        usable, why = nftables_available(nft_command) if name == "nftables" else ipvs_available()
        if not usable:
            reasons.append(f"{name}: {why}")
            log.warning("routing mesh cannot use %s: %s", name, why)
            continue
        asked = "as configured" if prefer == name else "by default" if prefer is None else f"instead of {prefer}"
        log.info("routing mesh uses %s %s (%s)", name, asked, why)
        return NftablesMesh(nft_command) if name == "nftables" else IpvsMesh(nft_command)
    raise NoMeshBackend("no routing mesh backend works here: " + "; ".join(reasons))
