"""The Molecule scenario molecule/default, run as a user runs it: `molecule test` from the repository's root.

It creates sandbox nodes (playbooks/sandbox.yml), converges with swarm.cluster.site, checks that a second
converge changes nothing, verifies with the collection's info modules and removes the nodes; Molecule fails
if any step does. The machine's engine is stopped again if it was started for the scenario.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_sandbox_site import host_engine_answers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.requires("debootstrap", "dockerd", "docker")]

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_molecule_default_scenario(tmp_path):
    engine_was_running = host_engine_answers()
    # Molecule runs ansible-playbook and ansible-config from PATH: this virtualenv's.
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", NO_COLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    try:
        proc = subprocess.run([str(BIN / "molecule"), "test"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=1200, check=False)
        assert proc.returncode == 0, f"molecule test failed:\n{proc.stdout[-12000:]}\n{proc.stderr[-12000:]}"
        assert "idempotence: Executed: Successful" in proc.stderr + proc.stdout
    finally:
        if not engine_was_running and host_engine_answers():
            subprocess.run([str(REPO / "scripts" / "host-dockerd.sh"), "stop"], check=False)
    assert host_engine_answers() == engine_was_running
