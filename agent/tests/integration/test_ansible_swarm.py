"""The swarm.cluster.swarm module, run by the real ``ansible-playbook`` against two real agents.

Two network-namespace hosts with their own Docker engine and a real ``swarmd``, in no swarm yet.
One play initialises the swarm on h1, joins h2 with the token the module returned, changes a
setting, leaves, removes the node, rotates the worker token and checks the old one is refused;
the docker CLI then checks what the module claimed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.cluster import SwarmNode, wait_for
from test_ansible_modules import Playbooks

pytestmark = pytest.mark.integration

RETENTION = "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}"


@pytest.fixture
def agents(lab):
    """Two agents in no swarm; the play's module_defaults point at h1's socket."""
    nodes = [SwarmNode(h) for h in lab.add_hosts("h1", "h2")]
    for node in nodes:
        node.start()
    return nodes


def swarm_task(name: str, on: SwarmNode | None = None, **options: Any) -> dict[str, Any]:
    flags = {k: options.pop(k) for k in ("check_mode", "diff", "ignore_errors", "register") if k in options}
    if on is not None:  # the same key as module_defaults, so that the task's value wins
        options["docker_host"] = f"unix://{on.socket}"
    return {"name": name, "swarm.cluster.swarm": options, **flags}


def secret_free(result: dict[str, Any], *tokens: str) -> bool:
    """No join token anywhere in ``result`` except in swarm_facts, where the module returns them on purpose."""
    shown = json.dumps({k: v for k, v in result.items() if k != "swarm_facts"})
    return not any(token in shown for token in tokens)


def test_init_join_settings_leave_remove_and_rotate(agents, tmp_path):
    h1, h2 = agents
    playbooks = Playbooks(tmp_path, h1)
    join_h2 = {"state": "join", "advertise_addr": h2.host.ip, "remote_addrs": [h1.addr]}

    results = playbooks.run(
        swarm_task("init h1", advertise_addr=h1.host.ip, register="init"),
        swarm_task("init h1 again", advertise_addr=h1.host.ip),
        swarm_task("join h2", on=h2, **join_h2, join_token="{{ init.swarm_facts.JoinTokens.Worker }}"),
        swarm_task("join h2 again", on=h2, **join_h2, join_token="{{ init.swarm_facts.JoinTokens.Worker }}"),
        swarm_task("keep fewer tasks", task_history_retention_limit=2, diff=True),
        swarm_task("check mode", task_history_retention_limit=7, labels={"env": "test"}, rotate_worker_token=True,
                   check_mode=True),
        {"name": "facts after check mode", "swarm.cluster.swarm_info": {}},
        swarm_task("check mode leave h2", on=h2, state="absent", check_mode=True),
        swarm_task("leave h2", on=h2, state="absent"),
        swarm_task("leave h2 again", on=h2, state="absent"),
        swarm_task("remove h2", state="remove", node_id="h2"),
        swarm_task("remove h2 again", state="remove", node_id="h2"),
        swarm_task("rotate the worker token", rotate_worker_token=True, register="rotated"),
        swarm_task("join h2 with the old token", on=h2, **join_h2,
                   join_token="{{ init.swarm_facts.JoinTokens.Worker }}", ignore_errors=True),
        swarm_task("join h2 with the new token", on=h2, **join_h2,
                   join_token="{{ rotated.swarm_facts.JoinTokens.Worker }}"),
    )
    assert not [r["warnings"] for r in results if r.get("warnings")], results
    (init, init_again, joined, joined_again, retention, checked, after_check, check_leave, left, left_again,
     removed, removed_again, rotated, refused, rejoined) = results
    tokens = init["swarm_facts"]["JoinTokens"]
    worker_token, manager_token = tokens["Worker"], tokens["Manager"]
    new_token = rotated["swarm_facts"]["JoinTokens"]["Worker"]

    # init, and init again on the manager of that swarm
    cluster_id = h1.docker("info", "--format", "{{.Swarm.Cluster.ID}}").stdout.strip()
    assert init["changed"] and init["swarm_facts"]["ID"] == cluster_id, init
    assert worker_token.startswith("SWMTKN-1-") and manager_token.startswith("SWMTKN-1-")
    assert h1.docker("swarm", "join-token", "-q", "manager").stdout.strip() == manager_token
    assert not init_again["changed"] and init_again["actions"] == ["No modification"], init_again
    assert init_again["swarm_facts"]["ID"] == cluster_id

    # join with the returned token; Ansible censors the token given as join_token in what it shows
    assert joined["changed"] and joined["diff"]["after"] == {"LocalNodeState": "active"}, joined
    assert not joined_again["changed"] and joined_again["actions"] == ["This node is already part of a swarm."]

    # a setting changed, shown in the diff
    assert retention["changed"] and retention["changes"] == ["task_history_retention_limit"], retention
    assert retention["diff"]["before"]["Orchestration"]["TaskHistoryRetentionLimit"] == 5
    assert retention["diff"]["after"]["Orchestration"]["TaskHistoryRetentionLimit"] == 2
    assert retention["swarm_facts"]["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"] == 2

    # check mode reports, does nothing (the CLI still sees 2 at the end, and no label)
    assert checked["changed"], checked
    assert checked["changes"] == ["labels", "task_history_retention_limit", "rotate_worker_token"], checked
    assert checked["actions"] == ["Swarm cluster would be updated: labels, task_history_retention_limit",
                                  "Worker join token would be rotated"], checked
    assert checked["diff"]["after"]["Labels"] == {"env": "test"} and checked["diff"]["before"]["Labels"] == {}
    assert after_check["swarm_facts"]["Version"] == retention["swarm_facts"]["Version"], "check mode wrote"
    assert after_check["swarm_facts"]["JoinTokens"]["Worker"] == worker_token
    assert check_leave["changed"] and left["changed"], (check_leave, left)
    assert not left_again["changed"] and left_again["actions"] == ["This node is not part of a swarm."]

    # removal of the node that left (the module waits until the manager shows it down)
    assert removed["changed"] and removed["diff"]["before"]["Description"]["Hostname"] == "h2", removed
    assert not removed_again["changed"] and removed_again["actions"] == ["Node h2 is not part of the swarm."]

    # rotation: a new token, the old one refused with the manager's message, the new one accepted
    assert rotated["changed"] and rotated["actions"] == ["Worker join token rotated"], rotated
    assert new_token != worker_token and rotated["swarm_facts"]["JoinTokens"]["Manager"] == manager_token
    assert h1.docker("swarm", "join-token", "-q", "worker").stdout.strip() == new_token
    assert refused["failed"] and "invalid join token" in refused["msg"], refused
    assert rejoined["changed"], rejoined

    for result in (init, init_again, joined, retention, checked, rotated, refused, rejoined):
        assert secret_free(result, worker_token, manager_token, new_token), result

    assert h1.docker("info", "--format", RETENTION).stdout.strip() == "2"
    assert json.loads(h1.docker("info", "--format", "{{json .Swarm.Cluster.Spec.Labels}}").stdout) in (None, {})
    wait_for("h2 back and ready, the removed h2 gone", lambda: sorted(
        h1.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout.splitlines()) == ["h1 Ready", "h2 Ready"])
    assert h2.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "active"
