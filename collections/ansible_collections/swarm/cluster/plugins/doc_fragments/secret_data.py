# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Options shared by the secret and config modules: community.docker.docker_secret's names."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  name:
    description:
      - The name, unique among the swarm's objects of this kind.
    type: str
    required: true
  data:
    description:
      - The value. Mutually exclusive with O(data_src); one of them is required with O(state=present).
    type: str
  data_is_b64:
    description:
      - O(data) is base64-encoded (binary values); the module decodes it before storing it.
    type: bool
    default: false
  data_src:
    description:
      - Path of a file on the managed host whose content is the value.
    type: path
  labels:
    description:
      - Labels. The module adds C(ansible_key), a SHA-224 digest of the value, by which it tells whether the
        stored value (which the API never returns for secrets) is the one asked for.
    type: dict
  force:
    description:
      - Replace the object even when its value and labels are those asked for.
    type: bool
    default: false
  state:
    description:
      - V(present) creates the object, replaces it when its value changed (values are immutable, so the
        old one is removed and a new one created; the manager refuses this while services use it), and
        updates its labels in place.
      - V(absent) removes it; the manager refuses while services use it, naming them.
    type: str
    default: present
    choices: [present, absent]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the name and labels (with the digest of the value), never the value.
notes:
  - Rolling versions (C(rolling_versions) of community.docker) are not available.
"""
