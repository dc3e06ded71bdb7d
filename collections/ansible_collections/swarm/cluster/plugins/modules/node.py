#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: node
short_description: Set a swarm node's availability, labels and role
description:
  - Updates one node of a swarm cluster through a manager's API, with the options of
    M(community.docker.docker_node) under the same names.
  - Options left unset keep the node's current value.
version_added: 0.1.0
author:
  - swarm developers (!UNKNOWN)
extends_documentation_fragment:
  - swarm.cluster.api
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - swarm.cluster.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the node spec (Name, Labels, Role, Availability) before and after.
options:
  hostname:
    description:
      - Hostname or ID of the node, as the cluster knows it.
    type: str
    required: true
  availability:
    description:
      - V(active) accepts new tasks; V(pause) keeps its tasks but takes no new ones; V(drain) moves its tasks away.
    type: str
    choices: [active, pause, drain]
  labels:
    description:
      - Node labels, used by placement constraints such as V(node.labels.storage==ssd).
      - How they combine with the node's labels depends on O(labels_state).
    type: dict
  labels_state:
    description:
      - V(merge) adds O(labels) to the node's labels, changing the values of those it already has.
      - V(replace) makes O(labels) the node's only labels; without O(labels) it removes them all.
    type: str
    default: merge
    choices: [merge, replace]
  labels_to_remove:
    description:
      - Names of labels to remove. A name also given in O(labels) keeps the value given there.
      - Ignored with O(labels_state=replace).
    type: list
    elements: str
  role:
    description:
      - V(manager) promotes the node, V(worker) demotes it. The manager refuses to demote the last manager.
    type: str
    choices: [manager, worker]
seealso:
  - module: swarm.cluster.node_info
  - module: community.docker.docker_node
"""

EXAMPLES = r"""
- name: Drain a node before maintenance
  swarm.cluster.node:
    hostname: worker-2
    availability: drain

- name: Label a node for placement constraints, keeping its other labels
  swarm.cluster.node:
    hostname: worker-1
    labels:
      storage: ssd

- name: Make these the node's only labels
  swarm.cluster.node:
    hostname: worker-1
    labels:
      zone: a
    labels_state: replace

- name: Promote a worker
  swarm.cluster.node:
    hostname: worker-3
    role: manager
"""

RETURN = r"""
node:
  description:
    - The node as the API inspects it (ID, Version, Spec, Description, Status, ManagerStatus).
  returned: always
  type: dict
  sample: {"ID": "4fs0...", "Spec": {"Availability": "drain", "Role": "worker", "Labels": {"storage": "ssd"}}}
changes:
  description:
    - Settings that differ from the node's.
  returned: always
  type: list
  elements: str
  sample: [availability, labels]
"""

import copy
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import ApiError, SwarmApi, argument_spec

# A concurrent writer makes an update fail with 409; reading again and re-planning is then safe.
_UPDATE_ATTEMPTS = 3

NODE_OPTIONS: dict[str, dict[str, Any]] = {
    "hostname": {"type": "str", "required": True},
    "availability": {"type": "str", "choices": ["active", "pause", "drain"]},
    "labels": {"type": "dict"},
    "labels_state": {"type": "str", "default": "merge", "choices": ["merge", "replace"]},
    "labels_to_remove": {"type": "list", "elements": "str"},
    "role": {"type": "str", "choices": ["manager", "worker"]},
}


def desired_labels(current: dict[str, str], params: dict[str, Any]) -> dict[str, str]:
    given = {str(k): "" if v is None else str(v) for k, v in (params.get("labels") or {}).items()}
    if params.get("labels_state") == "replace":
        return given
    out = dict(current)
    for name in params.get("labels_to_remove") or []:
        out.pop(name, None)
    out.update(given)
    return out


def plan_node(spec: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The node spec for ``params`` laid over ``spec``, and the names of the settings that change."""
    desired = copy.deepcopy(spec)
    changes = []
    labels = desired_labels(spec.get("Labels") or {}, params)
    if labels != (spec.get("Labels") or {}):
        changes.append("labels")
    desired["Labels"] = labels
    for option, field in (("availability", "Availability"), ("role", "Role")):
        value = params.get(option)
        if value is not None and value != spec.get(field):
            changes.append(option)
            desired[field] = value
    return desired, changes


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(**NODE_OPTIONS), supports_check_mode=True)
    api = SwarmApi(module)
    path = "/nodes/%s" % module.params["hostname"]
    for attempt in range(_UPDATE_ATTEMPTS):
        node = api.get(path)
        before = node["Spec"]
        desired, changes = plan_node(before, module.params)
        if not changes or module.check_mode:
            break
        try:
            api.call("POST", "/nodes/%s/update" % node["ID"], query={"version": node["Version"]["Index"]}, body=desired)
            break
        except ApiError as exc:
            if exc.status != 409 or attempt + 1 == _UPDATE_ATTEMPTS:
                module.fail_json(msg=exc.message, status=exc.status, api_path=exc.path)
    if changes and not module.check_mode:
        node = api.get("/nodes/%s" % node["ID"])
    module.exit_json(changed=bool(changes), changes=changes, node=node, diff={"before": before, "after": desired})


if __name__ == "__main__":
    main()
