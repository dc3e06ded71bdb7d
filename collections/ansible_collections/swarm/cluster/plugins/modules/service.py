#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: service
short_description: Create, update and remove swarm services
description:
  - Declares a service on a swarm cluster through a manager's API, with the options of
    M(community.docker.docker_swarm_service) under the same names, so that a play ports by renaming the module.
  - Unlike M(community.docker.docker_swarm_service), an option left unset keeps the service's current value
    instead of reverting to a default. The module reads the current spec, lays only the given options over it,
    and sends it with the version it read, so a concurrent change is never silently overwritten.
  - With O(wait=true) the module returns only once the service has converged (all its tasks running with the
    new spec) and otherwise fails saying why (for example C(no suitable node (...)) for a task that no node can run).
  - Durations accept Go's notation as the docker CLI does (V(1m30s), V(10s), V(500ms)); sizes accept binary units
    (V(64M), V(1G)).
version_added: 0.1.0
author:
  - swarm developers (!UNKNOWN)
extends_documentation_fragment:
  - swarm.cluster.api
  - swarm.cluster.wait
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - swarm.cluster.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the service spec (as the API carries it) before and after.
options:
  name:
    description:
      - Service name.
    type: str
    required: true
  state:
    description:
      - V(present) creates the service or updates it to match the given options.
      - V(absent) removes the service; its tasks are stopped.
    type: str
    default: present
    choices: [present, absent]
  image:
    description:
      - Image of the service's containers. Required to create a service.
    type: str
  mode:
    description:
      - V(replicated) runs O(replicas) tasks; V(global) runs one task on every eligible node.
      - A service created without it is replicated.
      - The API cannot change the mode of a service, so changing it removes and recreates the service.
    type: str
    choices: [replicated, global]
  replicas:
    description:
      - Number of tasks of a replicated service. A service created without it has one.
      - V(-1) means the same as leaving it unset (community.docker's convention).
    type: int
  command:
    description:
      - Command of the containers, replacing the image's entrypoint. A string is split as a shell would split it.
    type: raw
  args:
    description:
      - Arguments of the command.
    type: list
    elements: str
  env:
    description:
      - Environment variables, as a list of V(NAME=value) or a dictionary. Replaces the whole environment.
      - Quote values YAML would read as numbers or booleans.
    type: raw
  labels:
    description:
      - Labels of the service. Replaces all of them.
    type: dict
  container_labels:
    description:
      - Labels of the service's containers. Replaces all of them.
    type: dict
  hostname:
    description:
      - Hostname of the containers.
    type: str
  user:
    description:
      - User (name or UID, optionally with group) the command runs as.
    type: str
  working_dir:
    description:
      - Working directory of the command.
    type: str
  groups:
    description:
      - Additional groups of the process.
    type: list
    elements: str
  stop_signal:
    description:
      - Signal that stops the containers.
    type: str
  stop_grace_period:
    description:
      - Time to wait after the stop signal before killing the container, like V(10s).
    type: str
  read_only:
    description:
      - Mount the containers' root filesystem read-only.
    type: bool
  tty:
    description:
      - Allocate a pseudo-TTY.
    type: bool
  init:
    description:
      - Run an init process in the containers that forwards signals and reaps processes.
    type: bool
  hosts:
    description:
      - Extra lines of the containers' C(/etc/hosts), as a dictionary of host name to IP address.
    type: dict
  sysctls:
    description:
      - Namespaced kernel parameters of the containers.
    type: dict
  cap_add:
    description:
      - Capabilities to add.
    type: list
    elements: str
  cap_drop:
    description:
      - Capabilities to drop.
    type: list
    elements: str
  dns:
    description:
      - DNS servers of the containers.
    type: list
    elements: str
  dns_search:
    description:
      - DNS search domains of the containers.
    type: list
    elements: str
  dns_options:
    description:
      - Options of the containers' resolver.
    type: list
    elements: str
  healthcheck:
    description:
      - The containers' health check. Sub-options left unset keep their current value.
    type: dict
    suboptions:
      test:
        description:
          - Command to run. A string runs in a shell (V(CMD-SHELL)); a list starts with V(CMD), V(CMD-SHELL) or V(NONE).
        type: raw
      interval:
        description:
          - Time between two checks, like V(30s).
        type: str
      timeout:
        description:
          - Time one check may take.
        type: str
      retries:
        description:
          - Consecutive failures that make the container unhealthy.
        type: int
      start_period:
        description:
          - Time the container gets to start before failures count.
        type: str
  secrets:
    description:
      - Secrets the tasks get as files, by default C(/run/secrets/<secret_name>). Replaces all of them.
      - M(swarm.cluster.secret) creates secrets; the manager refuses a name that no secret has.
    type: list
    elements: dict
    suboptions:
      secret_name:
        description:
          - Name of the secret.
        type: str
        required: true
      secret_id:
        description:
          - ID of the secret; looked up by name when not given.
        type: str
      filename:
        description:
          - File name under C(/run/secrets), or an absolute path. Defaults to the secret's name.
        type: str
      uid:
        description:
          - Owner of the file.
        type: str
        default: "0"
      gid:
        description:
          - Group of the file.
        type: str
        default: "0"
      mode:
        description:
          - Permission bits of the file, in decimal (V(292) is C(0444), read for all).
        type: int
        default: 292
  configs:
    description:
      - Configs the tasks get as files, by default C(/<config_name>). Replaces all of them.
      - M(swarm.cluster.config) creates configs.
    type: list
    elements: dict
    suboptions:
      config_name:
        description:
          - Name of the config.
        type: str
        required: true
      config_id:
        description:
          - ID of the config; looked up by name when not given.
        type: str
      filename:
        description:
          - Absolute path of the file in the container, or a name relative to C(/). Defaults to the config's name.
        type: str
      uid:
        description:
          - Owner of the file.
        type: str
        default: "0"
      gid:
        description:
          - Group of the file.
        type: str
        default: "0"
      mode:
        description:
          - Permission bits of the file, in decimal (V(292) is C(0444), read for all).
        type: int
        default: 292
  mounts:
    description:
      - Mounts of the containers. Replaces all of them.
    type: list
    elements: dict
    suboptions:
      source:
        description:
          - Volume name or host path. Not for V(tmpfs).
        type: str
      target:
        description:
          - Path inside the container.
        type: str
        required: true
      type:
        description:
          - Kind of mount.
        type: str
        default: bind
        choices: [bind, volume, tmpfs, npipe]
      readonly:
        description:
          - Mount read-only.
        type: bool
      labels:
        description:
          - Labels of the volume (V(volume) only).
        type: dict
      propagation:
        description:
          - Bind propagation (V(bind) only).
        type: str
        choices: [shared, slave, private, rshared, rslave, rprivate]
      no_copy:
        description:
          - Do not copy the image's data into a new volume (V(volume) only).
        type: bool
      driver_config:
        description:
          - Volume driver (V(volume) only).
        type: dict
        suboptions:
          name:
            description:
              - Name of the volume driver.
            type: str
          options:
            description:
              - Options of the driver.
            type: dict
      tmpfs_size:
        description:
          - Size of the tmpfs, like V(64M) (V(tmpfs) only).
        type: str
      tmpfs_mode:
        description:
          - File mode of the tmpfs, in octal (V(tmpfs) only).
        type: int
  placement:
    description:
      - Where tasks may run. Sub-options left unset keep their current value.
    type: dict
    suboptions:
      constraints:
        description:
          - Constraints like V(node.role==worker) or V(node.labels.storage==ssd). The manager checks them and
            refuses unknown keys, naming the field.
        type: list
        elements: str
      preferences:
        description:
          - 'Placement preferences, each a dictionary like V({spread: node.labels.zone}).'
        type: list
        elements: dict
      replicas_max_per_node:
        description:
          - Most tasks of the service on one node; V(0) means no limit.
        type: int
  publish:
    description:
      - Published ports. Replaces all of them.
    type: list
    elements: dict
    suboptions:
      published_port:
        description:
          - Port on the nodes. Unset lets the cluster choose one.
        type: int
      target_port:
        description:
          - Port inside the containers.
        type: int
        required: true
      protocol:
        description:
          - Protocol of the port.
        type: str
        default: tcp
        choices: [tcp, udp, sctp]
      mode:
        description:
          - V(ingress) publishes the port on every node (routing mesh); V(host) only where a task runs.
          - Unset means V(ingress).
        type: str
        choices: [ingress, host]
  endpoint_mode:
    description:
      - How other services reach this one, V(vip) (one virtual IP) or V(dnsrr) (DNS round robin).
    type: str
    choices: [vip, dnsrr]
  networks:
    description:
      - Overlay networks the tasks attach to, each a name (or ID) or a dictionary with C(name), C(aliases) and
        C(options). Replaces all of them. M(swarm.cluster.network) creates networks.
    type: list
    elements: raw
  update_config:
    description:
      - How a change rolls out over the tasks. Sub-options left unset keep their current value.
    type: dict
    suboptions:
      parallelism:
        description:
          - Tasks updated at once; V(0) updates all at once.
        type: int
      delay:
        description:
          - Pause between two batches, like V(10s).
        type: str
      failure_action:
        description:
          - What to do when an updated task fails.
        type: str
        choices: [continue, pause, rollback]
      monitor:
        description:
          - How long an updated task is watched for failure.
        type: str
      max_failure_ratio:
        description:
          - Fraction of tasks that may fail before the failure action is taken.
        type: float
      order:
        description:
          - Whether the new task starts before the old one stops.
        type: str
        choices: [stop-first, start-first]
  rollback_config:
    description:
      - How a rollback rolls out over the tasks. Sub-options left unset keep their current value.
    type: dict
    suboptions:
      parallelism:
        description:
          - Tasks rolled back at once; V(0) rolls back all at once.
        type: int
      delay:
        description:
          - Pause between two batches.
        type: str
      failure_action:
        description:
          - What to do when a rolled back task fails.
        type: str
        choices: [continue, pause]
      monitor:
        description:
          - How long a rolled back task is watched for failure.
        type: str
      max_failure_ratio:
        description:
          - Fraction of tasks that may fail during the rollback.
        type: float
      order:
        description:
          - Whether the new task starts before the old one stops.
        type: str
        choices: [stop-first, start-first]
  restart_config:
    description:
      - When the cluster restarts a task that exits. Sub-options left unset keep their current value.
    type: dict
    suboptions:
      condition:
        description:
          - Restart on any exit, only on failure, or never.
        type: str
        choices: [none, on-failure, any]
      delay:
        description:
          - Time between two restarts, like V(5s).
        type: str
      max_attempts:
        description:
          - Restarts within O(restart_config.window) before giving up; V(0) means no limit.
        type: int
      window:
        description:
          - Window over which restarts are counted.
        type: str
  limits:
    description:
      - Resource limits of each task. Sub-options left unset keep their current value.
    type: dict
    suboptions:
      cpus:
        description:
          - CPUs, like V(0.5); V(0) means no limit.
        type: float
      memory:
        description:
          - Memory, like V(64M) or a number of bytes; V(0) means no limit.
        type: str
  reservations:
    description:
      - Resources reserved for each task; the scheduler only places a task on a node that has them.
      - Sub-options left unset keep their current value.
    type: dict
    suboptions:
      cpus:
        description:
          - CPUs, like V(0.25).
        type: float
      memory:
        description:
          - Memory, like V(32M) or a number of bytes.
        type: str
  logging:
    description:
      - Log driver of the containers. Sub-options left unset keep their current value.
    type: dict
    suboptions:
      driver:
        description:
          - Name of the log driver.
        type: str
      options:
        description:
          - Options of the log driver.
        type: dict
  force_update:
    description:
      - Replace every task even if nothing changed (the module then always reports a change).
    type: bool
    default: false
notes:
  - Secrets and configs are not options of this module yet.
seealso:
  - module: swarm.cluster.service_info
  - module: community.docker.docker_swarm_service
"""

EXAMPLES = r"""
- name: A web service with three replicas, waiting until all run
  swarm.cluster.service:
    name: web
    image: nginx:1.25
    replicas: 3
    publish:
      - published_port: 8080
        target_port: 80
    env:
      LOG_LEVEL: info
    wait: true

- name: A database reading its password from /run/secrets/db_password and its settings from /etc/db.conf
  swarm.cluster.service:
    name: pg
    image: postgres:16
    env:
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    secrets:
      - secret_name: db_password
        mode: 256  # 0400
    configs:
      - config_name: db_conf
        filename: /etc/db.conf

- name: Scale the web service; every other setting stays as it is
  swarm.cluster.service:
    name: web
    replicas: 5

- name: Only on nodes with SSD storage, rolling one task every 10 seconds
  swarm.cluster.service:
    name: db
    image: redis:7
    placement:
      constraints:
        - node.labels.storage==ssd
    update_config:
      parallelism: 1
      delay: 10s
    limits:
      memory: 256M

- name: One monitoring task on every node
  swarm.cluster.service:
    name: monitor
    image: prom/node-exporter
    mode: global

- name: Remove a service and wait until its tasks are gone
  swarm.cluster.service:
    name: web
    state: absent
    wait: true
"""

RETURN = r"""
service:
  description:
    - The service as the API inspects it (ID, Version, Spec, Endpoint, UpdateStatus, ...).
    - In check mode, when the service would be created, an empty dictionary.
  returned: when O(state=present)
  type: dict
  sample: {"ID": "x9k2...", "Version": {"Index": 12}, "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 3}}}}
changes:
  description:
    - Options whose value differs from the service's (all given options when the service is created).
    - Empty when the service is removed.
  returned: always
  type: list
  elements: str
  sample: [replicas, env, placement.constraints]
rebuilt:
  description:
    - Whether the service was removed and created again (its mode changed).
  returned: always
  type: bool
  sample: false
convergence:
  description:
    - What the wait saw last, when O(wait=true).
  returned: when O(wait=true) and not in check mode
  type: str
  sample: "service web converged: 3 of 3 tasks running"
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import (
    WAIT_ARGUMENT_SPEC,
    ApiError,
    SwarmApi,
    argument_spec,
    poll,
)
from ansible_collections.swarm.cluster.plugins.module_utils._convergence import removal_verdict, service_verdict
from ansible_collections.swarm.cluster.plugins.module_utils._service_spec import SpecError, Plan, plan_service

# A concurrent writer makes an update fail with 409; reading again and re-planning is then safe.
_UPDATE_ATTEMPTS = 3


def _rollout_spec(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "parallelism": {"type": "int"},
        "delay": {"type": "str"},
        "failure_action": {"type": "str", "choices": ["continue", "pause", "rollback"]},
        "monitor": {"type": "str"},
        "max_failure_ratio": {"type": "float"},
        "order": {"type": "str", "choices": ["stop-first", "start-first"]},
    }
    spec.update(extra or {})
    return spec


def _resources_spec() -> dict[str, Any]:
    return {"cpus": {"type": "float"}, "memory": {"type": "str"}}


def _file_reference_spec(kind: str) -> dict[str, Any]:
    return {
        kind + "_name": {"type": "str", "required": True},
        kind + "_id": {"type": "str"},
        "filename": {"type": "str"},
        "uid": {"type": "str", "default": "0"},
        "gid": {"type": "str", "default": "0"},
        "mode": {"type": "int", "default": 292},
    }


SERVICE_OPTIONS: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "image": {"type": "str"},
    "mode": {"type": "str", "choices": ["replicated", "global"]},
    "replicas": {"type": "int"},
    "command": {"type": "raw"},
    "args": {"type": "list", "elements": "str"},
    "env": {"type": "raw"},
    "labels": {"type": "dict"},
    "container_labels": {"type": "dict"},
    "hostname": {"type": "str"},
    "user": {"type": "str"},
    "working_dir": {"type": "str"},
    "groups": {"type": "list", "elements": "str"},
    "stop_signal": {"type": "str"},
    "stop_grace_period": {"type": "str"},
    "read_only": {"type": "bool"},
    "tty": {"type": "bool"},
    "init": {"type": "bool"},
    "hosts": {"type": "dict"},
    "sysctls": {"type": "dict"},
    "cap_add": {"type": "list", "elements": "str"},
    "cap_drop": {"type": "list", "elements": "str"},
    "dns": {"type": "list", "elements": "str"},
    "dns_search": {"type": "list", "elements": "str"},
    "dns_options": {"type": "list", "elements": "str"},
    "healthcheck": {"type": "dict", "options": {
        "test": {"type": "raw"},
        "interval": {"type": "str"},
        "timeout": {"type": "str"},
        "retries": {"type": "int"},
        "start_period": {"type": "str"},
    }},
    "mounts": {"type": "list", "elements": "dict", "options": {
        "source": {"type": "str"},
        "target": {"type": "str", "required": True},
        "type": {"type": "str", "default": "bind", "choices": ["bind", "volume", "tmpfs", "npipe"]},
        "readonly": {"type": "bool"},
        "labels": {"type": "dict"},
        "propagation": {"type": "str", "choices": ["shared", "slave", "private", "rshared", "rslave", "rprivate"]},
        "no_copy": {"type": "bool"},
        "driver_config": {"type": "dict", "options": {"name": {"type": "str"}, "options": {"type": "dict"}}},
        "tmpfs_size": {"type": "str"},
        "tmpfs_mode": {"type": "int"},
    }},
    # References by name, never secret values: nothing here to hide from logs.
    "secrets": {"type": "list", "elements": "dict", "options": _file_reference_spec("secret"), "no_log": False},
    "configs": {"type": "list", "elements": "dict", "options": _file_reference_spec("config")},
    "placement": {"type": "dict", "options": {
        "constraints": {"type": "list", "elements": "str"},
        "preferences": {"type": "list", "elements": "dict"},
        "replicas_max_per_node": {"type": "int"},
    }},
    "publish": {"type": "list", "elements": "dict", "options": {
        "published_port": {"type": "int"},
        "target_port": {"type": "int", "required": True},
        "protocol": {"type": "str", "default": "tcp", "choices": ["tcp", "udp", "sctp"]},
        "mode": {"type": "str", "choices": ["ingress", "host"]},
    }},
    "endpoint_mode": {"type": "str", "choices": ["vip", "dnsrr"]},
    "networks": {"type": "list", "elements": "raw"},
    "update_config": {"type": "dict", "options": _rollout_spec()},
    "rollback_config": {"type": "dict", "options": _rollout_spec(
        {"failure_action": {"type": "str", "choices": ["continue", "pause"]}}
    )},
    "restart_config": {"type": "dict", "options": {
        "condition": {"type": "str", "choices": ["none", "on-failure", "any"]},
        "delay": {"type": "str"},
        "max_attempts": {"type": "int"},
        "window": {"type": "str"},
    }},
    "limits": {"type": "dict", "options": _resources_spec()},
    "reservations": {"type": "dict", "options": _resources_spec()},
    "logging": {"type": "dict", "options": {"driver": {"type": "str"}, "options": {"type": "dict"}}},
    "force_update": {"type": "bool", "default": False},
}


class ServiceModule:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.api = SwarmApi(module)
        self.name: str = module.params["name"]

    def current(self) -> dict[str, Any] | None:
        return self.api.service_named(self.name)

    def inspect(self, service_id: str) -> dict[str, Any]:
        return self.api.get("/services/%s" % service_id)

    def plan(self, current: dict[str, Any] | None) -> Plan:
        try:
            return plan_service(self.name, current["Spec"] if current else None, self.with_ids())
        except SpecError as exc:
            self.module.fail_json(msg=str(exc))

    def with_ids(self) -> dict[str, Any]:
        """The options with the names of networks, secrets and configs completed by their IDs.

        The manager stores a service's networks by ID, and its secrets and configs by ID and name, as Docker
        does; compared by name alone, they would differ on every run. A name that nothing has stays as it is,
        and the manager refuses it naming the field.
        """
        params = dict(self.module.params)
        if params["networks"]:
            networks = []
            for item in params["networks"]:
                name = item.get("name") if isinstance(item, dict) else item
                found = self.api.network_named(name) if isinstance(name, str) else None
                if found is not None:
                    item = dict(item, name=found["Id"]) if isinstance(item, dict) else found["Id"]
                networks.append(item)
            params["networks"] = networks
        for kind in ("secret", "config"):
            if not params[kind + "s"]:
                continue
            completed = []
            for item in params[kind + "s"]:
                if not item.get(kind + "_id"):
                    found = self.api.file_object_named(kind, item[kind + "_name"])
                    if found is not None:
                        item = dict(item, **{kind + "_id": found["ID"]})
                completed.append(item)
            params[kind + "s"] = completed
        return params

    def present(self) -> None:
        params = self.module.params
        for attempt in range(_UPDATE_ATTEMPTS):
            current = self.current()
            plan = self.plan(current)
            changed = current is None or bool(plan.changes)
            if not changed or self.module.check_mode:
                break
            try:
                service_id = self.apply(current, plan)
                break
            except ApiError as exc:
                if exc.status != 409 or current is None or attempt + 1 == _UPDATE_ATTEMPTS:
                    self.module.fail_json(msg=exc.message, status=exc.status, api_path=exc.path)
        result: dict[str, Any] = {
            "changed": changed,
            "changes": plan.changes,
            "rebuilt": changed and plan.rebuild,
            "diff": {"before": current["Spec"] if current else {}, "after": plan.spec},
        }
        if self.module.check_mode:
            result["service"] = current or {}
            self.module.exit_json(**result)
        if not changed:
            service_id = current["ID"]
        service = self.inspect(service_id)
        if params["wait"]:
            result["convergence"] = self.wait_converged(service)
            service = self.inspect(service_id)
        result["service"] = service
        self.module.exit_json(**result)

    def apply(self, current: dict[str, Any] | None, plan: Plan) -> str:
        """Send the plan; return the service's ID. Raises ApiError."""
        if current is not None and not plan.rebuild:
            self.api.call(
                "POST", "/services/%s/update" % current["ID"],
                query={"version": current["Version"]["Index"]}, body=plan.spec,
            )
            return current["ID"]
        if current is not None:
            # The API refuses to change a service's mode: replace the service, as community.docker does.
            self.api.call("DELETE", "/services/%s" % current["ID"])
        created = self.api.call("POST", "/services/create", body=plan.spec)
        return created["ID"]

    def wait_converged(self, service: dict[str, Any]) -> str:
        expected = service["Spec"]["TaskTemplate"]

        def check() -> tuple[bool, str]:
            listed = self.api.list_objects("/services", {"id": [service["ID"]]}, status="true")
            now = next((s for s in listed if s["ID"] == service["ID"]), None)
            if now is None:
                self.module.fail_json(msg="service %s was removed while waiting for it to converge" % self.name)
            tasks = self.api.list_objects("/tasks", {"service": [service["ID"]], "desired-state": ["running"]})
            desired = (now.get("ServiceStatus") or {}).get("DesiredTasks", 0)
            verdict = service_verdict(now, tasks, desired, expected)
            if verdict.hopeless:
                self.module.fail_json(msg=verdict.reason, service=now)
            return verdict.done, verdict.reason

        done, reason = poll(check, self.module.params["wait_timeout"])
        if not done:
            self.module.fail_json(
                msg="timed out after %ds: %s" % (self.module.params["wait_timeout"], reason),
                service=self.inspect(service["ID"]),
            )
        return reason

    def absent(self) -> None:
        current = self.current()
        result: dict[str, Any] = {
            "changed": current is not None,
            "changes": [],
            "rebuilt": False,
            "diff": {"before": current["Spec"] if current else {}, "after": {}},
        }
        if current is None or self.module.check_mode:
            self.module.exit_json(**result)
        self.api.delete("/services/%s" % current["ID"])
        if self.module.params["wait"]:
            def check() -> tuple[bool, str]:
                tasks = self.api.list_objects("/tasks", {"service": [current["ID"]]})
                verdict = removal_verdict(self.name, tasks)
                return verdict.done, verdict.reason

            done, reason = poll(check, self.module.params["wait_timeout"])
            if not done:
                self.module.fail_json(msg="timed out after %ds: %s" % (self.module.params["wait_timeout"], reason))
            result["convergence"] = reason
        self.module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(WAIT_ARGUMENT_SPEC, **SERVICE_OPTIONS), supports_check_mode=True)
    service = ServiceModule(module)
    if module.params["state"] == "present":
        service.present()
    else:
        service.absent()


if __name__ == "__main__":
    main()
