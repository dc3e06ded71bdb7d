"""``ansible-test sanity`` on the swarm.cluster collection, the checks a collection of the Ansible package passes.

It runs from the collection's directory (ansible-test needs a path ending in ansible_collections/NAMESPACE/NAME)
with this virtualenv's ansible-test and Python version (``--local --python X.Y``); ignores are only those in
tests/sanity/ignore-CORE.txt, each allowed by ansible-lint's ``sanity`` rule. Skipped: ``pslint`` (the collection
has no PowerShell; it needs pwsh) and other Python versions than this one (compile and import run for the
interpreters present; tests/config.yml declares the modules' Python versions).

ansible-test installs each test's pinned requirements into virtualenvs of its own under ~/.ansible/test/venv,
from the package index, once per set of pins. It bootstraps pip in those with a script it downloads from
ci-files.testing.ansible.com, a site that machines reaching only package registries cannot reach; the test puts
an equivalent into ansible-test's cache first (pip from the interpreter's own ensurepip, then the pip version
ansible-test asks for, from the index), unless the downloaded script is already there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

from ansible_test._internal.python_requirements import get_venv_packages

REPO = Path(__file__).resolve().parents[3]
COLLECTION = REPO / "collections" / "ansible_collections" / "swarm" / "cluster"
BIN = Path(sys.executable).parent
PYTHON = "%d.%d" % sys.version_info[:2]
SKIPPED = ["pslint"]

# What ansible-test runs as "get-pip.py PIP_OPTIONS... pip==VERSION [--no-setuptools] [--no-wheel]" in an empty
# virtualenv. ensurepip runs as its own process: in-process it would clear pip's configuration (the index) for
# the install that follows.
PIP_BOOTSTRAP = '''\
"""Offline stand-in for get-pip.py, written by agent/tests/unit/test_ansible_sanity.py."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip"])
options = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *options]))
'''


def provide_pip_bootstrap() -> None:
    version = get_venv_packages(types.SimpleNamespace(version=PYTHON))["pip"]
    script = Path.home() / ".ansible" / "test" / "cache" / ("get_pip_%s.py" % version.replace(".", "_"))
    if not script.exists():
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(PIP_BOOTSTRAP)


def test_ansible_test_sanity() -> None:
    provide_pip_bootstrap()
    skips = [arg for test in SKIPPED for arg in ("--skip-test", test)]
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", NO_COLOR="1", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(BIN / "ansible-test"), "sanity", "--local", "--python", PYTHON, "--color", "no", *skips],
        cwd=COLLECTION, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:]
    # A test that could not run (a missing program or interpreter) is a warning, not a failure: make it one.
    missing = [line for line in output.splitlines() if "not found" in line and line.startswith("WARNING")]
    assert not missing, "\n".join(missing)
