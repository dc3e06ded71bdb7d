# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Attributes every module of the collection shares, and those of the read-only info modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  action_group:
    support: full
    membership: [swarm.cluster.swarm]
  platform:
    platforms: posix
"""

    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
"""
