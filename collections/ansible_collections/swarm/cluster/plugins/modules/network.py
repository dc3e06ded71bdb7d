#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: network
short_description: Create and remove swarm overlay networks
description:
  - Declares an overlay network of a swarm cluster through a manager's API, with the options of
    M(community.docker.docker_network) under the same names where they apply to a swarm.
  - Services join it with O(swarm.cluster.service#module:networks).
  - A network cannot be changed once created (the API has no update for networks). When the network exists with
    other settings than the given ones, the module fails and names each setting that differs, unless O(force=true),
    which removes the network and creates it again. M(community.docker.docker_network) recreates it silently
    instead, and with O(force=true) every time.
  - Options left unset are not compared; the manager chooses the subnet of a network created without O(ipam_config).
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
      - The diff shows the network's settings (Name, Driver, Scope, Internal, Attachable, IPAM, Labels) before
        and after, with the names the API gives them.
options:
  name:
    description:
      - Name of the network.
    type: str
    required: true
    aliases:
      - network_name
  state:
    description:
      - V(present) creates the network when it does not exist.
      - V(absent) removes it. The manager refuses to remove a network that services use and names them; the module
        fails with that message.
    type: str
    default: present
    choices: [present, absent]
  driver:
    description:
      - Network driver. A swarm cluster only has overlay networks, which span every node.
    type: str
    default: overlay
    choices: [overlay]
  scope:
    description:
      - Scope of the network. Overlay networks are swarm-scoped.
    type: str
    choices: [swarm]
  attachable:
    description:
      - Whether containers started outside services may attach to the network.
    type: bool
  internal:
    description:
      - Restrict external access to the network; its tasks reach only each other.
    type: bool
  ipam_config:
    description:
      - The network's subnet and gateway. An overlay network takes one entry.
      - A network created without it gets the next free subnet of the cluster's default address pools.
    type: list
    elements: dict
    suboptions:
      subnet:
        description:
          - Subnet in CIDR notation, like V(10.10.0.0/24). The manager refuses one that overlaps another network's.
        type: str
      gateway:
        description:
          - Gateway address, in the subnet. The manager uses the subnet's first address when unset.
        type: str
  labels:
    description:
      - Labels of the network. A network with other labels (any missing, added or changed) counts as different.
    type: dict
  force:
    description:
      - Remove the network and create it again when it exists with other settings than the given ones.
      - The manager refuses to remove a network that services use; the module then fails and the network is kept.
      - If the manager refuses the new settings (for example a subnet that overlaps another network's), the
        network stays removed and the module fails with the manager's message.
    type: bool
    default: false
notes:
  - Encrypted overlay networks, IPv6 and IPAM drivers other than the default are not options, because the cluster
    does not support them.
seealso:
  - module: swarm.cluster.network_info
  - module: swarm.cluster.service
  - module: community.docker.docker_network
"""

EXAMPLES = r"""
- name: An overlay network for the services of an application
  swarm.cluster.network:
    name: backend
    labels:
      app: shop

- name: A network with a subnet of its own, closed to the outside
  swarm.cluster.network:
    name: db
    internal: true
    ipam_config:
      - subnet: 10.20.0.0/24

- name: Services on the network
  swarm.cluster.service:
    name: api
    image: example/api:1
    networks: [backend]

- name: Move the network to another subnet (it must not be in use)
  swarm.cluster.network:
    name: db
    internal: true
    ipam_config:
      - subnet: 10.30.0.0/24
    force: true

- name: Remove the network
  swarm.cluster.network:
    name: backend
    state: absent
"""

RETURN = r"""
network:
  description:
    - The network as the API inspects it (Name, Id, Scope, Driver, IPAM, Internal, Attachable, Labels, ...).
    - In check mode, the network as it is now; an empty dictionary when it would be created.
  returned: when O(state=present)
  type: dict
  sample: {"Name": "backend", "Id": "7v2c...", "Scope": "swarm", "Driver": "overlay",
           "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]}}
changes:
  description:
    - Settings whose value differs from the network's (all given settings when the network is created).
  returned: always
  type: list
  elements: str
  sample: [internal, "ipam_config[0].subnet"]
rebuilt:
  description:
    - Whether the network was removed and created again (O(force=true) and settings that differ).
  returned: always
  type: bool
  sample: false
"""

import ipaddress
from typing import Any, NamedTuple

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import SwarmApi, argument_spec

NETWORK_OPTIONS: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True, "aliases": ["network_name"]},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "driver": {"type": "str", "default": "overlay", "choices": ["overlay"]},
    "scope": {"type": "str", "choices": ["swarm"]},
    "attachable": {"type": "bool"},
    "internal": {"type": "bool"},
    "ipam_config": {"type": "list", "elements": "dict", "options": {
        "subnet": {"type": "str"},
        "gateway": {"type": "str"},
    }},
    "labels": {"type": "dict"},
    "force": {"type": "bool", "default": False},
}

# Option of the module and field of the network spec, for the settings that are compared as they are.
_FLAGS = (("driver", "Driver"), ("scope", "Scope"), ("attachable", "Attachable"), ("internal", "Internal"))


class NetworkSpecError(ValueError):
    """Options that no network can have; the message names the option."""


class Difference(NamedTuple):
    option: str
    current: Any
    wanted: Any


class NetworkPlan(NamedTuple):
    spec: dict[str, Any]  # what the network is after the run: the body of a create, or the current settings
    differences: list[Difference]  # of an existing network; empty for a new one


def spec_of(network: dict[str, Any]) -> dict[str, Any]:
    """The settings of an inspected network, as a create body names them."""
    return {
        "Name": network["Name"],
        "Driver": network["Driver"],
        "Scope": network["Scope"],
        "Internal": bool(network.get("Internal")),
        "Attachable": bool(network.get("Attachable")),
        "IPAM": {"Config": [{"Subnet": c.get("Subnet"), "Gateway": c.get("Gateway")}
                            for c in (network.get("IPAM") or {}).get("Config") or []]},
        "Labels": network.get("Labels") or {},
    }


def _address(value: str | None) -> str | None:
    """An address or subnet in the form the manager shows it, so that equal values compare equal."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value))
    except ValueError:
        return value


def _pools(params: dict[str, Any]) -> list[dict[str, Any]] | None:
    given = params.get("ipam_config")
    if not given:
        return None
    if len(given) > 1:
        # Checked here too, before force could remove a network that the manager would then not create again.
        raise NetworkSpecError("ipam_config: an overlay network takes one subnet, got %d entries" % len(given))
    return [{"Subnet": _address(p.get("subnet")), "Gateway": _address(p.get("gateway"))} for p in given]


def _labels(params: dict[str, Any]) -> dict[str, str] | None:
    labels = params.get("labels")
    if labels is None:
        return None
    return {str(k): "" if v is None else str(v) for k, v in labels.items()}


def plan_network(name: str, current: dict[str, Any] | None, params: dict[str, Any]) -> NetworkPlan:
    """The network the options ask for, and how an existing network differs from it (given options only)."""
    pools, labels = _pools(params), _labels(params)
    if current is None:
        spec: dict[str, Any] = {"Name": name, "Scope": "swarm"}
        for option, field in _FLAGS:
            if params.get(option) is not None:
                spec[field] = params[option]
        if pools:
            spec["IPAM"] = {"Driver": "default", "Config": [{k: v for k, v in p.items() if v} for p in pools]}
        if labels is not None:
            spec["Labels"] = labels
        return NetworkPlan(spec, [])

    spec = spec_of(current)
    differences = []
    for option, field in _FLAGS:
        wanted = params.get(option)
        if wanted is not None and wanted != spec[field]:
            differences.append(Difference(option, spec[field], wanted))
            spec[field] = wanted
    configs = spec["IPAM"]["Config"]
    for index, pool in enumerate(pools or []):
        have = configs[index] if index < len(configs) else {}
        for key, field in (("subnet", "Subnet"), ("gateway", "Gateway")):
            if pool[field] is not None and pool[field] != _address(have.get(field)):
                differences.append(Difference("ipam_config[%d].%s" % (index, key), have.get(field), pool[field]))
    if pools and any(d.option.startswith("ipam_config") for d in differences):
        spec["IPAM"] = {"Config": pools}
    if labels is not None and labels != spec["Labels"]:
        differences.append(Difference("labels", spec["Labels"], labels))
        spec["Labels"] = labels
    return NetworkPlan(spec, differences)


def refusal(name: str, differences: list[Difference]) -> str:
    """Why an existing network is not changed without force, naming every setting that differs."""
    listed = ", ".join("%s (%r, asked %r)" % d for d in differences)
    return (
        "network %s exists with other settings: %s; a network cannot be updated: set force=true to remove it "
        "and create it again" % (name, listed)
    )


class NetworkModule:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.api = SwarmApi(module)
        self.name: str = module.params["name"]

    def plan(self, current: dict[str, Any] | None) -> NetworkPlan:
        try:
            return plan_network(self.name, current, self.module.params)
        except NetworkSpecError as exc:
            self.module.fail_json(msg=str(exc))

    def present(self) -> None:
        current = self.api.network_named(self.name)
        plan = self.plan(current)
        changes = [d.option for d in plan.differences]
        if current is not None and changes and not self.module.params["force"]:
            self.module.fail_json(msg=refusal(self.name, plan.differences), changes=changes, network=current)
        result: dict[str, Any] = {
            "changed": current is None or bool(changes),
            "changes": changes if current is not None else sorted(self.given()),
            "rebuilt": current is not None and bool(changes),
            "diff": {"before": spec_of(current) if current else {}, "after": plan.spec},
        }
        if self.module.check_mode or not result["changed"]:
            self.module.exit_json(network=current or {}, **result)
        if current is not None:
            self.api.delete("/networks/%s" % current["Id"])
        created = self.api.post("/networks/create", plan.spec)
        self.module.exit_json(network=self.api.get("/networks/%s" % created["Id"]), **result)

    def given(self) -> list[str]:
        return [o for o in ("scope", "attachable", "internal", "ipam_config", "labels")
                if self.module.params[o] is not None]

    def absent(self) -> None:
        current = self.api.network_named(self.name)
        result = {
            "changed": current is not None,
            "changes": [],
            "rebuilt": False,
            "diff": {"before": spec_of(current) if current else {}, "after": {}},
        }
        if current is not None and not self.module.check_mode:
            self.api.delete("/networks/%s" % current["Id"])
        self.module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(**NETWORK_OPTIONS), supports_check_mode=True)
    network = NetworkModule(module)
    if module.params["state"] == "present":
        network.present()
    else:
        network.absent()


if __name__ == "__main__":
    main()
