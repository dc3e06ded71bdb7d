#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: swarm
short_description: Initialise, join and leave a swarm, remove nodes, rotate join tokens and change cluster settings
description:
  - Manages this node's membership of a swarm cluster and the cluster's settings through the agent's API,
    with the options of M(community.docker.docker_swarm) under the same names.
  - V(present) initialises a new swarm on a node that is in none, and on a manager updates the cluster's
    settings. Settings left unset keep their current value; on a new swarm they get the cluster's defaults.
  - "The join tokens are returned in RV(swarm_facts.JoinTokens). The module itself never writes them to a log
    or a message, but Ansible shows return values with C(-v); give the task C(no_log: true) where the output
    is recorded."
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
      - With O(state=present) the diff shows the cluster's settings (the swarm spec) before and after.
      - With O(state=join) and O(state=absent) it shows this node's swarm state (C(LocalNodeState)) before and after.
      - With O(state=remove) it shows the removed node before and nothing after.
options:
  state:
    description:
      - V(present) initialises a swarm on this node if it is in none, otherwise updates the settings of the
        swarm this node manages. It fails on a worker.
      - V(join) joins the swarm at O(remote_addrs) with O(join_token); a node already in a swarm is left as it is.
      - V(absent) makes this node leave its swarm; a node in none is left as it is.
      - V(remove) removes the node O(node_id) from the swarm this node manages; the node must be down
        (it left or its agent stopped) unless O(force=true). A node that is not in the swarm is left as it is.
    type: str
    default: present
    choices: [present, join, absent, remove]
  advertise_addr:
    description:
      - Address other nodes reach this one at, as V(192.168.1.1), V(192.168.1.1:2377) or an interface
        name such as V(eth0); detected when unset.
      - Only used when the swarm is initialised or joined, so it is not compared for idempotence.
    type: str
  listen_addr:
    description:
      - Address and port the manager API listens on.
      - Only used when the swarm is initialised or joined, so it is not compared for idempotence.
    type: str
    default: 0.0.0.0:2377
  remote_addrs:
    description:
      - Addresses (V(HOST:PORT)) of managers of the swarm to join. Required with O(state=join).
    type: list
    elements: str
  join_token:
    description:
      - Worker or manager token of the swarm to join, as RV(swarm_facts.JoinTokens) returns them.
        Required with O(state=join).
      - Ansible censors this value wherever it appears in the module's output, so when it is given the
        token of the same name in RV(swarm_facts.JoinTokens) reads C(VALUE_SPECIFIED_IN_NO_LOG_PARAMETER).
    type: str
  force:
    description:
      - With O(state=absent), leave the swarm even if this node is a manager.
      - With O(state=remove), remove the node even if it is not down.
      - With O(state=present), ask for a new cluster (C(ForceNewCluster)) even if this node is a manager;
        the manager API refuses that on a node that is in a swarm, and the module passes its answer on.
    type: bool
    default: false
  node_id:
    description:
      - ID or hostname of the node to remove. Required with O(state=remove).
    type: str
  rotate_worker_token:
    description:
      - Replace the worker join token with a new one; the old one is refused from then on.
      - Used with O(state=present) on a manager. Every run with it set rotates the token again.
    type: bool
    default: false
  rotate_manager_token:
    description:
      - Replace the manager join token with a new one; the old one is refused from then on.
      - Used with O(state=present) on a manager. Every run with it set rotates the token again.
    type: bool
    default: false
  name:
    description:
      - Name of the swarm.
    type: str
  labels:
    description:
      - Labels of the swarm. Replace all of its labels. Node labels are set with M(swarm.cluster.node).
      - The label C(swarm.gossip.key-rotation) sets how often the managers put a new gossip key in front
        (a duration such as C(6h), at least C(1m); 12 hours when absent).
    type: dict
  task_history_retention_limit:
    description:
      - Number of ended tasks kept per service slot. The cluster's default is V(5).
    type: int
  dispatcher_heartbeat_period:
    description:
      - How often nodes report to the managers, in Go's notation like V(5s) or V(500ms); at least V(100ms).
        The cluster's default is V(5s).
      - An integer is a number of nanoseconds, as M(community.docker.docker_swarm) takes it.
    type: raw
  node_cert_expiry:
    description:
      - Validity of node certificates, in Go's notation like V(2160h) (90 days, the cluster's default);
        at least V(1h).
      - An integer is a number of nanoseconds, as M(community.docker.docker_swarm) takes it.
    type: raw
  snapshot_interval:
    description:
      - Raft setting of Docker's managers (log entries between snapshots), kept in the cluster's spec so that
        Docker's tools see what they set. The managers here keep state in etcd, whose own settings apply.
    type: int
  keep_old_snapshots:
    description:
      - Raft setting kept in the cluster's spec (see O(snapshot_interval)).
    type: int
  log_entries_for_slow_followers:
    description:
      - Raft setting kept in the cluster's spec (see O(snapshot_interval)).
    type: int
  heartbeat_tick:
    description:
      - Raft setting kept in the cluster's spec (see O(snapshot_interval)).
    type: int
  election_tick:
    description:
      - Raft setting kept in the cluster's spec (see O(snapshot_interval)).
    type: int
notes:
  - The module talks to the agent at O(api_socket), normally that of the node it runs on. O(state=join) and
    O(state=absent) act on that node; O(state=present) and O(state=remove) need it to be a manager
    (or, for O(state=present), in no swarm yet).
  - The cluster settings are used with O(state=present) only.
seealso:
  - module: swarm.cluster.swarm_info
  - module: swarm.cluster.node
  - module: community.docker.docker_swarm
"""

EXAMPLES = r"""
- name: Initialise the swarm on the first manager
  swarm.cluster.swarm:
    state: present
    advertise_addr: 192.168.1.10
  register: swarm
  no_log: true  # the result carries the join tokens

- name: Join a worker
  swarm.cluster.swarm:
    state: join
    advertise_addr: 192.168.1.20
    remote_addrs: [192.168.1.10:2377]
    join_token: "{{ hostvars[groups['managers'][0]].swarm.swarm_facts.JoinTokens.Worker }}"

- name: Keep fewer ended tasks and take heartbeats every 10 seconds
  swarm.cluster.swarm:
    task_history_retention_limit: 2
    dispatcher_heartbeat_period: 10s

- name: Rotate the worker token (the old one is refused from now on)
  swarm.cluster.swarm:
    rotate_worker_token: true
  no_log: true

- name: Leave the swarm
  swarm.cluster.swarm:
    state: absent

- name: Remove a node that has left, from a manager
  swarm.cluster.swarm:
    state: remove
    node_id: worker-3
"""

RETURN = r"""
swarm_facts:
  description:
    - The swarm as a manager inspects it (ID, Version, Spec, TLSInfo, JoinTokens, ...) after the change,
      when this node is a manager then; otherwise (and for a swarm check mode would create) empty.
  returned: always
  type: dict
  contains:
    JoinTokens:
      description:
        - Tokens that let nodes join the swarm.
        - A token given as O(join_token) reads C(VALUE_SPECIFIED_IN_NO_LOG_PARAMETER) here.
      returned: when this node is a manager
      type: dict
      contains:
        Worker:
          description: Token to join as a worker.
          returned: when this node is a manager
          type: str
          sample: SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx
        Manager:
          description: Token to join as a manager.
          returned: when this node is a manager
          type: str
          sample: SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-7p73s1dx5in4tatdymyhg9hu2
  sample: {"ID": "k1...", "Spec": {"Name": "default", "Orchestration": {"TaskHistoryRetentionLimit": 5}}}
actions:
  description:
    - What the module did (or, in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: ["Swarm cluster updated: task_history_retention_limit", "Worker join token rotated"]
changes:
  description:
    - With O(state=present) on a manager, the settings that differ from the cluster's and the tokens rotated.
  returned: always
  type: list
  elements: str
  sample: [task_history_retention_limit, rotate_worker_token]
"""

import copy
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import ApiError, SwarmApi, argument_spec, poll
from ansible_collections.swarm.cluster.plugins.module_utils._units import parse_duration

# A concurrent writer makes an update fail with 409; reading again and re-planning is then safe.
_UPDATE_ATTEMPTS = 3
# community.docker waits up to about 20 seconds for a node to show down before removing it: a node that has
# just left is usually marked down a moment later, and a play that removes it right away should not fail.
_DOWN_WAIT_SECONDS = 20.0

SWARM_OPTIONS: dict[str, dict[str, Any]] = {
    "state": {"type": "str", "default": "present", "choices": ["present", "join", "absent", "remove"]},
    "advertise_addr": {"type": "str"},
    "listen_addr": {"type": "str", "default": "0.0.0.0:2377"},
    "remote_addrs": {"type": "list", "elements": "str"},
    "join_token": {"type": "str", "no_log": True},
    "force": {"type": "bool", "default": False},
    "node_id": {"type": "str"},
    "rotate_worker_token": {"type": "bool", "default": False},
    "rotate_manager_token": {"type": "bool", "default": False},
    "name": {"type": "str"},
    "labels": {"type": "dict"},
    "task_history_retention_limit": {"type": "int"},
    "dispatcher_heartbeat_period": {"type": "raw"},
    "node_cert_expiry": {"type": "raw"},
    "snapshot_interval": {"type": "int"},
    "keep_old_snapshots": {"type": "int"},
    "log_entries_for_slow_followers": {"type": "int"},
    "heartbeat_tick": {"type": "int"},
    "election_tick": {"type": "int"},
}

REQUIRED_IF = [
    ("state", "join", ["remote_addrs", "join_token"]),
    ("state", "remove", ["node_id"]),
]

# Where each cluster setting lives in the swarm spec.
SETTINGS: dict[str, tuple[str, ...]] = {
    "name": ("Name",),
    "labels": ("Labels",),
    "task_history_retention_limit": ("Orchestration", "TaskHistoryRetentionLimit"),
    "dispatcher_heartbeat_period": ("Dispatcher", "HeartbeatPeriod"),
    "node_cert_expiry": ("CAConfig", "NodeCertExpiry"),
    "snapshot_interval": ("Raft", "SnapshotInterval"),
    "keep_old_snapshots": ("Raft", "KeepOldSnapshots"),
    "log_entries_for_slow_followers": ("Raft", "LogEntriesForSlowFollowers"),
    "heartbeat_tick": ("Raft", "HeartbeatTick"),
    "election_tick": ("Raft", "ElectionTick"),
}
DURATION_SETTINGS = frozenset({"dispatcher_heartbeat_period", "node_cert_expiry"})
# (option, query flag of POST /swarm/update, token name)
ROTATIONS = (
    ("rotate_worker_token", "rotateWorkerToken", "Worker"),
    ("rotate_manager_token", "rotateManagerToken", "Manager"),
)

# Docker's LocalNodeState values of a node that belongs to a swarm (even one it cannot reach right now).
_MEMBER_STATES = frozenset({"active", "pending", "locked", "error"})


def duration_ns(value: Any) -> int:
    """Go's notation (``5s``) or, as community.docker takes these options, an integer of nanoseconds."""
    if isinstance(value, bool):
        raise ValueError("invalid duration %r: give a duration like 5s" % (value,))
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    return parse_duration(text)


def given_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The cluster settings given, by option name, as the API carries them; ValueError names a bad option."""
    out: dict[str, Any] = {}
    for option in SETTINGS:
        value = params.get(option)
        if value is None:
            continue
        if option in DURATION_SETTINGS:
            try:
                value = duration_ns(value)
            except ValueError as exc:
                raise ValueError("%s: %s" % (option, exc)) from None
        elif option == "labels":
            value = {str(k): "" if v is None else str(v) for k, v in value.items()}
        out[option] = value
    return out


def spec_value(spec: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        spec = (spec or {}).get(key)
    return spec


def lay_over(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with ``settings`` (by option name) written at their places."""
    out = copy.deepcopy(spec)
    for option, value in settings.items():
        *parents, leaf = SETTINGS[option]
        target = out
        for key in parents:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[leaf] = value
    return out


def plan_update(spec: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The swarm spec for ``params`` laid over ``spec``, and what changes: option names, then rotations."""
    settings = given_settings(params)
    changes = [option for option, value in settings.items() if value != current_setting(spec, option)]
    changes += [rotation[0] for rotation in ROTATIONS if params.get(rotation[0])]
    return lay_over(spec, settings), changes


def current_setting(spec: dict[str, Any], option: str) -> Any:
    value = spec_value(spec, SETTINGS[option])
    # Empty labels may come back as null or be left out; an empty dict given means the same.
    return (value or {}) if option == "labels" else value


def membership(swarm_info: dict[str, Any]) -> str:
    """``manager``, ``worker`` or ``none``: this node's part in a swarm, from GET /info's ``Swarm``."""
    if swarm_info.get("ControlAvailable"):
        return "manager"
    if swarm_info.get("NodeID") or swarm_info.get("LocalNodeState") in _MEMBER_STATES:
        return "worker"
    return "none"


def node_is_down(node: dict[str, Any]) -> bool:
    return (node.get("Status") or {}).get("State") in ("down", "unknown")


class SwarmModule:
    """One run of the module: reads this node's swarm state, acts on it, and collects the result."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.api = SwarmApi(module)
        self.actions: list[str] = []
        self.changes: list[str] = []
        self.changed = False
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    def record(self, done: str, would: str) -> None:
        """Note an action; check mode only says what would be done."""
        self.actions.append(would if self.module.check_mode else done)

    # ------------------------------------------------------------ reading

    def swarm_info(self) -> dict[str, Any]:
        return self.api.get("/info").get("Swarm") or {}

    def facts(self) -> dict[str, Any]:
        """GET /swarm when this node is a manager; JoinTokens stay in it for the caller and nowhere else."""
        if membership(self.swarm_info()) != "manager":
            return {}
        return self.api.get("/swarm")

    def fail_api(self, exc: ApiError) -> None:
        self.module.fail_json(msg=exc.message, status=exc.status, api_path=exc.path)

    # ------------------------------------------------------------ states

    def present(self) -> dict[str, Any]:
        try:
            settings = given_settings(self.params)
        except ValueError as exc:
            self.module.fail_json(msg=str(exc))
        role = membership(self.swarm_info())
        if role == "manager" and not self.params["force"]:
            return self.update()
        if role == "worker":
            self.module.fail_json(
                msg="this node is a worker of a swarm: state=present initialises a swarm on a node in none, "
                    "or updates the settings of the swarm on a manager; run it on a manager",
                actions=self.actions,
            )
        spec = lay_over({}, settings)
        self.before, self.after = {}, spec
        self.changed = True
        if self.module.check_mode:
            self.actions.append("New Swarm cluster would be created")
            return {}
        body = {
            "ListenAddr": self.params["listen_addr"],
            "AdvertiseAddr": self.params["advertise_addr"] or "",
            "ForceNewCluster": self.params["force"],
            "Spec": spec,
        }
        node_id = self.api.post("/swarm/init", body)
        facts = self.facts()
        self.after = facts.get("Spec", spec)
        self.actions.append("New Swarm cluster created: %s (this node is %s)" % (facts.get("ID", "?"), node_id))
        return facts

    def update(self) -> dict[str, Any]:
        for attempt in range(_UPDATE_ATTEMPTS):
            swarm = self.api.get("/swarm")
            self.before = swarm["Spec"]
            desired, self.changes = plan_update(self.before, self.params)
            self.after = desired
            if not self.changes:
                self.actions.append("No modification")
                return swarm
            if self.module.check_mode:
                break
            query: dict[str, Any] = {"version": swarm["Version"]["Index"]}
            for option, flag, _role in ROTATIONS:
                if self.params[option]:
                    query[flag] = "true"
            try:
                self.api.call("POST", "/swarm/update", query=query, body=desired)
                break
            except ApiError as exc:
                if exc.status != 409 or attempt + 1 == _UPDATE_ATTEMPTS:
                    self.fail_api(exc)
        self.changed = True
        settings = [c for c in self.changes if c in SETTINGS]
        if settings:
            self.record("Swarm cluster updated: %s" % ", ".join(settings),
                        "Swarm cluster would be updated: %s" % ", ".join(settings))
        for option, _flag, role in ROTATIONS:
            if self.params[option]:
                self.record("%s join token rotated" % role, "%s join token would be rotated" % role)
        if self.module.check_mode:
            return swarm
        return self.api.get("/swarm")

    def join(self) -> dict[str, Any]:
        state = self.swarm_info()
        self.before = self.after = {"LocalNodeState": state.get("LocalNodeState", "inactive")}
        if membership(state) != "none":
            self.actions.append("This node is already part of a swarm.")
            return self.facts()
        self.changed = True
        self.after = {"LocalNodeState": "active"}
        if self.module.check_mode:
            self.actions.append("This node would join the swarm at %s" % ", ".join(self.params["remote_addrs"]))
            return {}
        body = {
            "ListenAddr": self.params["listen_addr"],
            "AdvertiseAddr": self.params["advertise_addr"] or "",
            "RemoteAddrs": self.params["remote_addrs"],
            "JoinToken": self.params["join_token"],
        }
        self.api.post("/swarm/join", body)
        state = self.swarm_info()
        self.after = {"LocalNodeState": state.get("LocalNodeState")}
        self.actions.append("This node joined the swarm as %s %s" % (membership(state), state.get("NodeID")))
        return self.facts()

    def absent(self) -> dict[str, Any]:
        state = self.swarm_info()
        self.before = self.after = {"LocalNodeState": state.get("LocalNodeState", "inactive")}
        if membership(state) == "none":
            self.actions.append("This node is not part of a swarm.")
            return {}
        self.changed = True
        self.after = {"LocalNodeState": "inactive"}
        if self.module.check_mode:
            self.actions.append("Node %s would leave the swarm" % state.get("NodeID"))
            return {}
        self.api.post("/swarm/leave", None, query={"force": "true" if self.params["force"] else "false"})
        self.actions.append("Node %s has left the swarm" % state.get("NodeID"))
        return {}

    def remove(self) -> dict[str, Any]:
        if membership(self.swarm_info()) != "manager":
            self.module.fail_json(msg="This node is not a manager: state=remove must run on a manager.")
        ref = self.params["node_id"]
        node = self.api.find("/nodes/%s" % ref)
        if node is None:
            self.actions.append("Node %s is not part of the swarm." % ref)
            return self.api.get("/swarm")
        if not self.params["force"] and not node_is_down(node):
            def down() -> tuple[bool, str]:
                seen = self.api.find("/nodes/%s" % node["ID"])
                return seen is None or node_is_down(seen), (seen or {}).get("Status", {}).get("State", "gone")

            is_down, last = poll(down, min(_DOWN_WAIT_SECONDS, float(self.params["timeout"])), interval=1.0)
            if not is_down:
                self.module.fail_json(
                    msg="Can not remove node %s (%s): its status is %s, not down; stop its agent, make it leave, "
                        "or use force" % (node["ID"], node["Description"].get("Hostname", ""), last),
                )
        self.changed = True
        self.before = {key: node.get(key) for key in ("ID", "Description", "Spec", "Status")}
        self.after = {}
        if self.module.check_mode:
            self.actions.append("Node %s would be removed from the swarm" % node["ID"])
            return self.api.get("/swarm")
        try:
            self.api.call("DELETE", "/nodes/%s" % node["ID"], query={"force": "true" if self.params["force"] else "false"})
        except ApiError as exc:
            if exc.status != 404:  # removed meanwhile by someone else: what was asked holds
                self.fail_api(exc)
        self.actions.append("Node %s is removed from the swarm" % node["ID"])
        return self.api.get("/swarm")

    def run(self) -> None:
        act = {"present": self.present, "join": self.join, "absent": self.absent, "remove": self.remove}
        facts = act[self.params["state"]]()
        self.module.exit_json(
            changed=self.changed, actions=self.actions, changes=self.changes, swarm_facts=facts,
            diff={"before": self.before, "after": self.after},
        )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(**SWARM_OPTIONS), required_if=REQUIRED_IF, supports_check_mode=True,
    )
    SwarmModule(module).run()


if __name__ == "__main__":
    main()
