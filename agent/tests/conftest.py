"""Fixtures shared by all tests: test hosts (`lab`), the workload image (`busybox`) and a real etcd (`etcd`).

Integration tests need root and the real binaries. Where those are missing the tests are skipped with a
reason naming what is missing, unless SWARM_TEST_STRICT=1 (set by CI), where a missing part is an error:
CI must never pass by skipping.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.etcd import ETCD, Etcd
from harness.hosts import CONTAINERD, DOCKER_CLI, DOCKERD, Lab, remove_stale_labs
from harness.image import BUSYBOX, busybox_image

log = logging.getLogger(__name__)

STRICT = os.environ.get("SWARM_TEST_STRICT") == "1"

_ENGINE_PARTS = (DOCKERD, CONTAINERD, DOCKER_CLI, "runc", "nsenter", "ip", "iptables")
# What each fixture needs on this machine; an integration test needs root in any case.
_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "lab": _ENGINE_PARTS,
    "busybox": (BUSYBOX.as_posix(),),
    "etcd": (ETCD,),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires(*parts): programs an integration test needs beyond its fixtures' (a fixture name "
                   "such as 'lab' or 'etcd' stands for that fixture's programs)")


def _missing_for(item: pytest.Item) -> list[str]:
    programs = [p for name in getattr(item, "fixturenames", ()) for p in _REQUIREMENTS.get(name, ())]
    for marker in item.iter_markers("requires"):
        programs += [p for part in marker.args for p in _REQUIREMENTS.get(part, (part,))]
    missing = [] if os.geteuid() == 0 else ["root privileges"]
    for program in programs:
        if shutil.which(program) is None and program not in missing:
            missing.append(program)
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        if item.get_closest_marker("integration") is None:
            continue
        missing = _missing_for(item)
        if not missing:
            continue
        reason = f"integration test needs {', '.join(missing)} (run it as root after scripts/setup.sh)"
        if STRICT:
            problems.append(f"{item.nodeid}: {reason}")
        else:
            item.add_marker(pytest.mark.skip(reason=reason))
    if problems:
        raise pytest.UsageError("SWARM_TEST_STRICT=1 and integration tests cannot run:\n" + "\n".join(problems))


def pytest_sessionstart(session: pytest.Session) -> None:
    # Namespaces, bridges and engines of an earlier run that crashed would otherwise collide or leak.
    if os.geteuid() == 0 and shutil.which("ip"):
        removed = remove_stale_labs()
        if removed:
            log.warning("removed labs left behind by earlier runs: %s", ", ".join(removed))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"_report_{when}", None), "failed", False)
               for when in ("setup", "call"))


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh Lab; hosts are added by the test. Logs of every process are shown when the test fails."""
    # A short base path: dockerd and containerd put unix sockets under it (108-byte limit).
    base = Path(tempfile.mkdtemp(prefix="swt-", dir="/tmp"))
    the_lab = Lab(base)
    try:
        yield the_lab
    finally:
        try:
            if _failed(request):
                for host in the_lab.hosts:
                    for log_file in sorted(host.root.glob("*.log")):
                        sys.stderr.write(f"\n===== {host.name}: {log_file.name} (last 4000 chars) =====\n"
                                         f"{log_file.read_text(errors='replace')[-4000:]}\n")
        finally:
            the_lab.cleanup()
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox() -> tuple[str, Path]:
    """(image name, `docker save` archive) of the test image; load it with `host.load_image(archive)`."""
    return busybox_image()


@pytest.fixture
def etcd(request: pytest.FixtureRequest) -> Iterator[Etcd]:
    with Etcd() as server:
        try:
            yield server
        finally:
            if _failed(request):
                sys.stderr.write(f"\n===== etcd log (last 4000 chars) =====\n{server.logs()[-4000:]}\n")
