#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: network_info
short_description: Inspect a swarm overlay network
description:
  - Returns a network as C(docker network inspect) shows it, with the return values of
    M(community.docker.docker_network_info).
version_added: 0.1.0
author:
  - swarm developers (!UNKNOWN)
extends_documentation_fragment:
  - swarm.cluster.api
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - swarm.cluster.attributes
  - swarm.cluster.attributes.info_module
options:
  name:
    description:
      - Name of the network.
    type: str
    required: true
seealso:
  - module: swarm.cluster.network
"""

EXAMPLES = r"""
- name: Read the backend network
  swarm.cluster.network_info:
    name: backend
  register: backend

- name: Show its subnet
  ansible.builtin.debug:
    msg: "{{ backend.network.IPAM.Config[0].Subnet }}"
  when: backend.exists
"""

RETURN = r"""
exists:
  description:
    - Whether the network exists.
  returned: always
  type: bool
  sample: true
network:
  description:
    - The network as the API inspects it; null when it does not exist.
  returned: always
  type: dict
  sample: {"Name": "backend", "Id": "7v2c...", "Scope": "swarm", "Driver": "overlay", "Internal": false}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import SwarmApi, argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(name={"type": "str", "required": True}), supports_check_mode=True
    )
    network = SwarmApi(module).network_named(module.params["name"])
    module.exit_json(changed=False, exists=network is not None, network=network)


if __name__ == "__main__":
    main()
