#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_info
short_description: Inspect swarm nodes
description:
  - Returns nodes as C(docker node inspect) shows them, with the options and return values of
    M(community.docker.docker_node_info).
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
      - Hostnames or IDs of the nodes to inspect. Without it, all nodes.
      - Ignored when O(self=true).
    type: list
    elements: str
  self:
    description:
      - Inspect only the node whose API the module talks to.
    type: bool
    default: false
seealso:
  - module: swarm.cluster.node
  - module: swarm.cluster.swarm_info
"""

EXAMPLES = r"""
- name: All nodes
  swarm.cluster.node_info:
  register: all_nodes

- name: Two nodes by hostname
  swarm.cluster.node_info:
    name:
      - worker-1
      - worker-2

- name: The node the module runs on
  swarm.cluster.node_info:
    self: true
"""

RETURN = r"""
nodes:
  description:
    - The nodes as the API inspects them (ID, Version, Spec, Description, Status, ManagerStatus), sorted by hostname.
  returned: always
  type: list
  elements: dict
  sample: [{"ID": "4fs0...", "Description": {"Hostname": "worker-1"}, "Status": {"State": "ready"}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import SwarmApi, argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            name={"type": "list", "elements": "str"},
            self={"type": "bool", "default": False},
        ),
        supports_check_mode=True,
    )
    api = SwarmApi(module)
    if module.params["self"]:
        refs = [api.get("/info")["Swarm"]["NodeID"]]
    else:
        refs = module.params["name"]
    if refs:
        nodes = [api.get("/nodes/%s" % ref) for ref in refs]
    else:
        nodes = api.list_objects("/nodes")
    module.exit_json(changed=False, nodes=nodes)


if __name__ == "__main__":
    main()
