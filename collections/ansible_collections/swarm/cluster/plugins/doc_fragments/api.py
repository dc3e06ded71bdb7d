# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Options shared by every module that talks to a swarm manager's API."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_socket:
    description:
      - Path of the swarm manager's API socket on the managed host, the unix socket where the
        agent serves the swarm part of the Docker Engine API 1.41.
      - The alias O(docker_host) also accepts C(unix://PATH), so that tasks written for
        community.docker modules keep working.
    type: str
    default: /run/swarm/swarm.sock
    aliases:
      - docker_host
  timeout:
    description:
      - Seconds to wait for one answer of the API.
    type: int
    default: 60
notes:
  - The module runs on the managed host, which must be a swarm manager (or reach a manager's
    socket); it needs nothing beyond Python and Ansible's own module utilities.
"""
