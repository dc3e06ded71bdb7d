"""ansible-lint with the production profile over the collection's roles, the playbooks, inventories and the
Molecule scenario (configuration: .ansible-lint at the repository's root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_ansible_lint_production_profile():
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", NO_COLOR="1", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(BIN / "ansible-lint"), "-f", "pep8"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
