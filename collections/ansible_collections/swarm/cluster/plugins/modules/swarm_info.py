#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: swarm_info
short_description: Inspect a swarm cluster, and list its nodes, services and tasks
description:
  - Returns the cluster as C(docker swarm inspect) shows it and, on request, lists of nodes, services and tasks
    as C(docker node ls), C(docker service ls) and C(docker service ps) show them.
  - Options and return values are those of M(community.docker.docker_swarm_info).
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
  nodes:
    description:
      - List the nodes.
    type: bool
    default: false
  nodes_filters:
    description:
      - 'Filters of the node list, as C(docker node ls --filter) takes them, for example V({role: manager}).'
    type: dict
  services:
    description:
      - List the services.
    type: bool
    default: false
  services_filters:
    description:
      - 'Filters of the service list, as C(docker service ls --filter) takes them, for example V({name: web}).'
    type: dict
  tasks:
    description:
      - List the tasks.
    type: bool
    default: false
  tasks_filters:
    description:
      - 'Filters of the task list, as C(docker service ps --filter) takes them, for example V({desired-state: running}).'
    type: dict
  verbose_output:
    description:
      - Return nodes, services and tasks as the API inspects them instead of a summary of each.
    type: bool
    default: false
notes:
  - The module fails when the node it talks to is not a swarm manager; RV(docker_swarm_active) and
    RV(docker_swarm_manager) then say why.
seealso:
  - module: swarm.cluster.node_info
  - module: swarm.cluster.service_info
"""

EXAMPLES = r"""
- name: Cluster facts and the list of nodes
  swarm.cluster.swarm_info:
    nodes: true
  register: cluster

- name: Tasks meant to run, in full
  swarm.cluster.swarm_info:
    tasks: true
    tasks_filters:
      desired-state: running
    verbose_output: true

- name: Services labelled tier=front
  swarm.cluster.swarm_info:
    services: true
    services_filters:
      label: tier=front
"""

RETURN = r"""
can_talk_to_docker:
  description:
    - Whether the module reached the API.
  returned: both on success and on error
  type: bool
docker_swarm_active:
  description:
    - Whether the node is part of a swarm.
  returned: both on success and on error
  type: bool
docker_swarm_manager:
  description:
    - Whether the node is a swarm manager. The module only succeeds if it is.
  returned: both on success and on error
  type: bool
swarm_facts:
  description:
    - The cluster as the API inspects it (ID, Spec, TLSInfo, JoinTokens, ...).
  returned: always
  type: dict
nodes:
  description:
    - The nodes; unless O(verbose_output=true), each with the columns of C(docker node ls)
      (ID, Hostname, Status, Availability, ManagerStatus, EngineVersion).
  returned: When O(nodes=true)
  type: list
  elements: dict
services:
  description:
    - The services; unless O(verbose_output=true), each with the columns of C(docker service ls)
      (ID, Name, Mode, Replicas, Image, Ports) and the counts RunningTasks and DesiredTasks.
  returned: When O(services=true)
  type: list
  elements: dict
tasks:
  description:
    - The tasks; unless O(verbose_output=true), each with the columns of C(docker service ps)
      (ID, Name, Image, Node, DesiredState, CurrentState, Error) and ContainerID.
  returned: When O(tasks=true)
  type: list
  elements: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import SwarmApi, argument_spec


def node_summary(node: dict[str, Any]) -> dict[str, Any]:
    manager = node.get("ManagerStatus")
    status = None
    if manager:
        status = "Leader" if manager.get("Leader") else manager.get("Reachability")
    return {
        "ID": node["ID"],
        "Hostname": node["Description"]["Hostname"],
        "Status": node["Status"]["State"],
        "Availability": node["Spec"]["Availability"],
        "ManagerStatus": status,
        "EngineVersion": node["Description"].get("Engine", {}).get("EngineVersion", ""),
    }


def service_summary(service: dict[str, Any]) -> dict[str, Any]:
    spec = service["Spec"]
    mode = spec.get("Mode") or {}
    counts = service.get("ServiceStatus") or {}
    return {
        "ID": service["ID"],
        "Name": spec["Name"],
        "Mode": "Global" if "Global" in mode else "Replicated",
        "Replicas": mode["Replicated"]["Replicas"] if "Replicated" in mode else None,
        "Image": spec["TaskTemplate"]["ContainerSpec"]["Image"],
        "Ports": (spec.get("EndpointSpec") or {}).get("Ports") or [],
        "RunningTasks": counts.get("RunningTasks"),
        "DesiredTasks": counts.get("DesiredTasks"),
    }


def task_summary(task: dict[str, Any], hostnames: dict[str, str]) -> dict[str, Any]:
    status = task.get("Status") or {}
    return {
        "ID": task["ID"],
        "Name": task.get("Name"),
        "ContainerID": (status.get("ContainerStatus") or {}).get("ContainerID"),
        "Image": task["Spec"]["ContainerSpec"]["Image"],
        "Node": hostnames.get(task.get("NodeID") or "", task.get("NodeID")),
        "DesiredState": task["DesiredState"],
        "CurrentState": status.get("State"),
        "Error": status.get("Err"),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            nodes={"type": "bool", "default": False},
            nodes_filters={"type": "dict"},
            services={"type": "bool", "default": False},
            services_filters={"type": "dict"},
            tasks={"type": "bool", "default": False},
            tasks_filters={"type": "dict"},
            verbose_output={"type": "bool", "default": False},
        ),
        supports_check_mode=True,
    )
    params = module.params
    api = SwarmApi(module)
    swarm = api.get("/info")["Swarm"]
    flags = {
        "can_talk_to_docker": True,
        "docker_swarm_active": swarm.get("LocalNodeState") == "active",
        "docker_swarm_manager": bool(swarm.get("ControlAvailable")),
    }
    if not flags["docker_swarm_manager"]:
        module.fail_json(
            msg="the node at %s is not a swarm manager (swarm state: %s)" % (api.socket, swarm.get("LocalNodeState")),
            **flags
        )
    result: dict[str, Any] = dict(flags, changed=False, swarm_facts=api.get("/swarm"))
    verbose = params["verbose_output"]
    if params["nodes"] or params["tasks"]:
        all_nodes = api.list_objects("/nodes")
        hostnames = {n["ID"]: n["Description"]["Hostname"] for n in all_nodes}
    if params["nodes"]:
        nodes = api.list_objects("/nodes", params["nodes_filters"]) if params["nodes_filters"] else all_nodes
        result["nodes"] = nodes if verbose else [node_summary(n) for n in nodes]
    if params["services"]:
        services = api.list_objects("/services", params["services_filters"], status="true")
        result["services"] = services if verbose else [service_summary(s) for s in services]
    if params["tasks"]:
        tasks = api.list_objects("/tasks", params["tasks_filters"])
        result["tasks"] = tasks if verbose else [task_summary(t, hostnames) for t in tasks]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
