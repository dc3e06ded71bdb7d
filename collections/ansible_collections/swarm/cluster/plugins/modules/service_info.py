#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: service_info
short_description: Inspect a swarm service
description:
  - Returns a service as C(docker service inspect) shows it, with the return values of
    M(community.docker.docker_swarm_service_info).
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
      - Name of the service.
    type: str
    required: true
seealso:
  - module: swarm.cluster.service
  - module: swarm.cluster.swarm_info
"""

EXAMPLES = r"""
- name: Read the web service
  swarm.cluster.service_info:
    name: web
  register: web

- name: Show its replica count
  ansible.builtin.debug:
    msg: "{{ web.service.Spec.Mode.Replicated.Replicas }}"
  when: web.exists
"""

RETURN = r"""
exists:
  description:
    - Whether the service exists.
  returned: always
  type: bool
  sample: true
service:
  description:
    - The service as the API inspects it, with ServiceStatus (running and desired task counts); null when it does not exist.
  returned: always
  type: dict
  sample: {"ID": "x9k2...", "Spec": {"Name": "web"}, "ServiceStatus": {"RunningTasks": 3, "DesiredTasks": 3}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import SwarmApi, argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(name={"type": "str", "required": True}), supports_check_mode=True
    )
    api = SwarmApi(module)
    found = api.service_named(module.params["name"])
    service = None
    if found is not None:
        listed = api.list_objects("/services", {"id": [found["ID"]]}, status="true")
        service = next((s for s in listed if s["ID"] == found["ID"]), None)
    module.exit_json(changed=False, exists=service is not None, service=service)


if __name__ == "__main__":
    main()
