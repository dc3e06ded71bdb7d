"""The swarm.cluster modules, run by the real ``ansible-playbook`` against a real cluster.

One manager and one worker (network-namespace hosts with their own Docker
engine and a real ``swarmd``); the playbooks run on the controller with the
local connection and talk to the manager's socket, as they would on a manager.
Results come from the ansible.posix.json callback; what the modules claim is
checked with the docker CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import SwarmNode, running_tasks, wait_for
from swarm_agent.manager.ca import RootCA

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
COLLECTIONS = REPO / "collections"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
WEB = ["httpd", "-f", "-p", "80", "-h", "/"]


class Playbooks:
    """Runs one play of the given tasks on localhost and returns each task's result, in order."""

    def __init__(self, workdir: Path, manager: SwarmNode) -> None:
        self.workdir = workdir
        self.manager = manager
        self.runs = 0

    def run(self, *tasks: dict[str, Any]) -> list[dict[str, Any]]:
        self.runs += 1
        play = {
            "hosts": "localhost",
            "gather_facts": False,
            # The group also proves meta/runtime.yml's action_group; docker_host's unix:// form is what
            # community.docker users have in their module_defaults.
            "module_defaults": {"group/swarm.cluster.swarm": {"docker_host": f"unix://{self.manager.socket}"}},
            "tasks": list(tasks),
        }
        playbook = self.workdir / f"play{self.runs}.yml"
        playbook.write_text(json.dumps([play], indent=2))  # JSON is YAML
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(self.workdir / "tmp"),
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
            ANSIBLE_NOCOLOR="1",
        )
        proc = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local",
             "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
            capture_output=True, text=True, env=env, cwd=self.workdir, timeout=180, check=False,
        )
        try:
            output = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"ansible-playbook gave no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        results = [t["hosts"]["localhost"] for t in output["plays"][0]["tasks"]]
        stats = output["stats"]["localhost"]
        unexpected = [r for r, t in zip(results, tasks) if r.get("failed") and not t.get("ignore_errors")]
        assert not unexpected and stats["unreachable"] == 0, f"play failed: {json.dumps(unexpected, indent=2)}"
        return results


def service_task(**options: Any) -> dict[str, Any]:
    flags = {k: options.pop(k) for k in ("check_mode", "diff", "ignore_errors") if k in options}
    return {"name": f"service {options.get('name')}", "swarm.cluster.service": options, **flags}


def node_task(**options: Any) -> dict[str, Any]:
    return {"name": f"node {options['hostname']}", "swarm.cluster.node": options}


@pytest.fixture
def cluster(lab, busybox):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "w1")
    for host in hosts:
        host.load_image(archive)
    manager, worker = nodes = [SwarmNode(h) for h in hosts]
    for node in nodes:
        node.start()
    manager.init()
    worker.join(manager)
    wait_for(
        "both nodes Ready",
        lambda: manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split().count("Ready") == 2,
    )
    return image, manager, worker


@pytest.fixture
def playbooks(cluster, tmp_path):
    _, manager, _ = cluster
    return Playbooks(tmp_path, manager)


def inspect(manager: SwarmNode, kind: str, ref: str) -> dict[str, Any]:
    return manager.json(kind, "inspect", ref)[0]


def test_service_create_update_check_diff_errors_and_remove(cluster, playbooks):
    image, manager, worker = cluster
    web = {"name": "web", "image": image}

    created, = playbooks.run(service_task(
        **web, replicas=2, command=WEB[:1], args=WEB[1:], env={"MODE": "one"}, labels={"tier": "front"},
        container_labels={"team": "a"}, update_config={"delay": "1s", "parallelism": 1},
        restart_config={"delay": "2s"}, wait=True, wait_timeout=60,
    ))
    assert created["changed"] and "replicas" in created["changes"], created
    assert "converged: 2 of 2" in created["convergence"]
    assert len(running_tasks(manager, "web")) == 2
    spec = inspect(manager, "service", "web")["Spec"]
    assert created["service"]["ID"] == inspect(manager, "service", "web")["ID"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["MODE=one"]
    assert spec["UpdateConfig"]["Delay"] == 1_000_000_000
    assert spec["TaskTemplate"]["RestartPolicy"]["Delay"] == 2_000_000_000

    version = inspect(manager, "service", "web")["Version"]["Index"]
    again, checked, bad = playbooks.run(
        service_task(**web, replicas=2, command=WEB[:1], args=WEB[1:], env={"MODE": "one"},
                     labels={"tier": "front"}, update_config={"delay": "1s"}),
        service_task(name="web", replicas=1, labels={"tier": "back"}, check_mode=True),
        service_task(name="web", placement={"constraints": ["node.colour==red"]}, ignore_errors=True),
    )
    assert not again["changed"] and again["changes"] == [], again
    assert checked["changed"] and sorted(checked["changes"]) == ["labels", "replicas"], checked
    assert bad["failed"] and "TaskTemplate.Placement.Constraints" in bad["msg"] and "node.colour" in bad["msg"], bad
    after = inspect(manager, "service", "web")
    assert after["Version"]["Index"] == version, "check mode or a refused update changed the service"
    assert after["Spec"]["Labels"] == {"tier": "front"} and after["Spec"]["Mode"]["Replicated"]["Replicas"] == 2

    updated, = playbooks.run(service_task(name="web", replicas=3, env=["MODE=two"], diff=True, wait=True))
    assert updated["changed"] and sorted(updated["changes"]) == ["env", "replicas"], updated
    assert updated["diff"]["before"]["Mode"]["Replicated"]["Replicas"] == 2
    assert updated["diff"]["after"]["Mode"]["Replicated"]["Replicas"] == 3
    assert updated["diff"]["after"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["MODE=two"]
    spec = inspect(manager, "service", "web")["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Env"] == ["MODE=two"] and spec["Mode"]["Replicated"]["Replicas"] == 3
    # Options not given in the update are kept, unlike community.docker's reset to defaults.
    assert spec["Labels"] == {"tier": "front"} and container["Labels"] == {"team": "a"}
    assert container["Command"] == WEB[:1] and container["Args"] == WEB[1:]
    assert spec["UpdateConfig"]["Delay"] == 1_000_000_000
    assert "converged: 3 of 3" in updated["convergence"]
    assert sorted(t["Spec"]["ContainerSpec"]["Env"][0] for t in running_tasks(manager, "web")) == ["MODE=two"] * 3

    removed, removed_again = playbooks.run(
        service_task(name="web", state="absent", wait=True, wait_timeout=60),
        service_task(name="web", state="absent"),
    )
    assert removed["changed"] and not removed_again["changed"]
    assert "web" not in manager.docker("service", "ls", "--format", "{{.Name}}").stdout.split()


def test_nodes_labels_wait_and_info(cluster, playbooks):
    image, manager, worker = cluster
    ssd = {"name": "ssd", "image": image, "command": WEB, "placement": {"constraints": ["node.labels.storage==ssd"]}}

    # No node has the label: the wait gives up and says why.
    unplaced, = playbooks.run(service_task(**ssd, wait=True, wait_timeout=4, ignore_errors=True))
    assert unplaced["failed"] and "no suitable node" in unplaced["msg"], unplaced

    labelled, relabelled, drained, drained_again, replaced, placed = playbooks.run(
        node_task(hostname="w1", labels={"storage": "ssd"}),
        node_task(hostname="w1", labels={"storage": "ssd"}),
        node_task(hostname="m1", availability="drain"),
        node_task(hostname="m1", availability="drain"),
        node_task(hostname="m1", labels={"zone": "a"}, labels_state="replace"),
        service_task(name="ssd", wait=True, wait_timeout=60),
    )
    assert labelled["changed"] and labelled["changes"] == ["labels"] and not relabelled["changed"]
    assert drained["changed"] and drained["diff"]["before"]["Availability"] == "active" and not drained_again["changed"]
    assert replaced["changed"] and replaced["node"]["Spec"]["Labels"] == {"zone": "a"}
    assert not placed["changed"] and "converged: 1 of 1" in placed["convergence"], placed
    assert inspect(manager, "node", "w1")["Spec"]["Labels"] == {"storage": "ssd"}
    assert inspect(manager, "node", "m1")["Spec"]["Availability"] == "drain"
    assert [t["NodeID"] for t in running_tasks(manager, "ssd")] == [worker.node_id]

    active, service_info, missing, node_info, me, swarm = playbooks.run(
        node_task(hostname="m1", availability="active"),
        {"name": "service info", "swarm.cluster.service_info": {"name": "ssd"}},
        {"name": "missing service", "swarm.cluster.service_info": {"name": "nope"}},
        {"name": "node info", "swarm.cluster.node_info": {}},
        {"name": "node info self", "swarm.cluster.node_info": {"self": True}},
        {"name": "swarm info", "swarm.cluster.swarm_info": {"nodes": True, "services": True, "tasks": True,
                                                            "tasks_filters": {"desired-state": "running"}}},
    )
    assert active["changed"] and inspect(manager, "node", "m1")["Spec"]["Availability"] == "active"

    assert service_info["exists"] and not missing["exists"] and missing["service"] is None
    cli_service = inspect(manager, "service", "ssd")
    assert service_info["service"]["ID"] == cli_service["ID"]
    # The CLI re-encodes through Go structs (zero values dropped, nulls added): compare what it keeps intact.
    for path in (("Mode",), ("TaskTemplate", "ContainerSpec"), ("TaskTemplate", "Placement")):
        ours, theirs = service_info["service"]["Spec"], cli_service["Spec"]
        for key in path:
            ours, theirs = ours[key], theirs[key]
        assert ours == theirs, path
    assert service_info["service"]["ServiceStatus"]["RunningTasks"] == 1

    cli_nodes = [line.split() for line in manager.docker(
        "node", "ls", "--format", "{{.ID}} {{.Hostname}} {{.Status}} {{.Availability}}").stdout.splitlines()]
    assert sorted(n["Description"]["Hostname"] for n in node_info["nodes"]) == ["m1", "w1"]
    assert [n["ID"] for n in me["nodes"]] == [manager.node_id]
    summaries = sorted(
        [n["ID"], n["Hostname"], n["Status"].capitalize(), n["Availability"].capitalize()] for n in swarm["nodes"]
    )
    assert summaries == sorted(cli_nodes)
    assert next(n for n in swarm["nodes"] if n["Hostname"] == "m1")["ManagerStatus"] == "Leader"

    assert swarm["docker_swarm_active"] and swarm["docker_swarm_manager"]
    cluster_id = manager.docker("info", "--format", "{{.Swarm.Cluster.ID}}").stdout.strip()
    assert swarm["swarm_facts"]["ID"] == cluster_id
    cli_services = manager.docker("service", "ls", "--format", "{{.ID}} {{.Name}} {{.Replicas}}").stdout.split()
    summary = swarm["services"][0]
    assert [summary["ID"][:12], summary["Name"], f"{summary['RunningTasks']}/{summary['Replicas']}"] == cli_services
    cli_tasks = manager.docker("service", "ps", "ssd", "--filter", "desired-state=running",
                               "--format", "{{.ID}} {{.Node}} {{.CurrentState}}").stdout.split()
    assert [(t["ID"][:12], t["Node"], t["CurrentState"]) for t in swarm["tasks"]] == [
        (cli_tasks[0], cli_tasks[1], cli_tasks[2].lower())
    ]


def test_secrets_and_configs(cluster, playbooks):
    image, manager, _ = cluster

    def secret(**options: Any) -> dict[str, Any]:
        flags = {k: options.pop(k) for k in ("check_mode", "diff", "ignore_errors") if k in options}
        return {"name": f"secret {options['name']}", "swarm.cluster.secret": options, **flags}

    source = playbooks.workdir / "site.conf"
    source.write_text("listen 80\n")
    created, again, config, relabelled, checked = playbooks.run(
        secret(name="pw", data="hunter2", labels={"app": "db"}),
        secret(name="pw", data="hunter2", labels={"app": "db"}),
        {"name": "config", "swarm.cluster.config": {"name": "site.conf", "data_src": str(source)}},
        secret(name="pw", data="hunter2", labels={"app": "db2"}, diff=True),
        secret(name="pw", data="aHVudGVyMw==", data_is_b64=True, check_mode=True),
    )
    assert created["changed"] and created["operation"] == "create" and not again["changed"], (created, again)
    first_id = created["secret_id"]
    assert manager.docker("secret", "inspect", "--format", "{{.ID}}", "pw").stdout.strip() == first_id
    assert manager.docker("config", "inspect", "--format", "{{printf \"%s\" .Spec.Data}}",
                          "site.conf").stdout == "listen 80\n\n", config
    assert relabelled["operation"] == "update" and relabelled["secret_id"] == first_id
    assert relabelled["diff"]["before"]["labels"]["app"] == "db"
    assert relabelled["diff"]["after"]["labels"]["app"] == "db2"
    assert checked["changed"] and checked["operation"] == "replace"
    labels = inspect(manager, "secret", "pw")["Spec"]["Labels"]
    assert labels["app"] == "db2" and inspect(manager, "secret", "pw")["ID"] == first_id, "check mode changed it"
    for result in (created, again, relabelled, checked):
        assert "hunter2" not in json.dumps(result)

    # A new value is a new secret; the manager refuses to drop one a service uses, naming the service.
    replaced, = playbooks.run(secret(name="pw", data="hunter3"))
    assert replaced["operation"] == "replace" and replaced["secret_id"] != first_id
    # The service module refers to them by name; a second run changes nothing, a new mode is a change.
    db = {"name": "db", "image": image, "command": ["sleep", "3600"],
          "secrets": [{"secret_name": "pw", "filename": "db_password", "mode": 0o400}],
          "configs": [{"config_name": "site.conf", "filename": "/etc/site.conf"}]}
    made, same, remoded = playbooks.run(
        {"name": "db", "swarm.cluster.service": db},
        {"name": "db again", "swarm.cluster.service": db},
        {"name": "db mode", "swarm.cluster.service": dict(db, secrets=[{"secret_name": "pw", "filename": "db_password",
                                                                       "mode": 0o440}])},
    )
    assert made["changed"] and not same["changed"] and remoded["changes"] == ["secrets"], (made, same, remoded)
    refs = inspect(manager, "service", "db")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert refs["Secrets"] == [{"SecretID": replaced["secret_id"], "SecretName": "pw",
                                "File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 0o440}}], refs
    assert refs["Configs"][0]["ConfigName"] == "site.conf" and refs["Configs"][0]["File"]["Name"] == "/etc/site.conf"
    config_gone = {"name": "config gone", "swarm.cluster.config": {"name": "site.conf", "state": "absent"}}
    busy, busy_config = playbooks.run(secret(name="pw", state="absent", ignore_errors=True),
                                      dict(config_gone, ignore_errors=True))
    assert busy["failed"] and "in use by the following service: db" in busy["msg"], busy
    assert busy_config["failed"] and "in use by the following service: db" in busy_config["msg"], busy_config
    manager.docker("service", "rm", "db")
    gone, gone_again, gone_config = playbooks.run(secret(name="pw", state="absent"), secret(name="pw", state="absent"),
                                                  config_gone)
    assert gone["changed"] and not gone_again["changed"] and gone_config["changed"]
    assert manager.docker("secret", "ls", "-q").stdout.strip() == ""


def network_task(**options: Any) -> dict[str, Any]:
    flags = {k: options.pop(k) for k in ("check_mode", "diff", "ignore_errors") if k in options}
    return {"name": f"network {options.get('name')}", "swarm.cluster.network": options, **flags}


def test_network_create_compare_force_in_use_and_remove(cluster, playbooks):
    image, manager, _ = cluster
    front = {"name": "front", "attachable": True, "internal": False, "labels": {"app": "shop"},
             "ipam_config": [{"subnet": "10.77.0.0/24"}]}

    checked, created, again, info, missing = playbooks.run(
        network_task(**front, check_mode=True, diff=True),
        network_task(**front, scope="swarm", diff=True),
        network_task(**front, driver="overlay"),
        {"name": "network info", "swarm.cluster.network_info": {"name": "front"}},
        {"name": "missing network", "swarm.cluster.network_info": {"name": "fro"}},
    )
    assert checked["changed"] and checked["network"] == {} and checked["diff"]["before"] == {}, checked
    assert created["changed"] and created["changes"] == ["attachable", "internal", "ipam_config", "labels", "scope"]
    assert created["diff"]["after"]["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24"}], created
    assert not again["changed"] and again["changes"] == [] and not again["rebuilt"], again
    cli = inspect(manager, "network", "front")
    assert created["network"]["Id"] == again["network"]["Id"] == cli["Id"]
    assert (cli["Driver"], cli["Scope"], cli["Attachable"], cli["Internal"]) == ("overlay", "swarm", True, False)
    assert cli["IPAM"]["Config"][0]["Subnet"] == "10.77.0.0/24" and cli["Labels"] == {"app": "shop"}
    assert info["exists"] and info["network"]["Id"] == cli["Id"]
    # The name filter matches substrings; the module takes only the exact name.
    assert not missing["exists"] and missing["network"] is None

    # Every setting the API cannot change: without force a failure naming it, and the network stays as it was.
    refusals = playbooks.run(
        network_task(name="front", attachable=False, ignore_errors=True),
        network_task(name="front", internal=True, ignore_errors=True),
        network_task(name="front", labels={"app": "shop", "tier": "front"}, ignore_errors=True),
        network_task(name="front", ipam_config=[{"subnet": "10.78.0.0/24"}], ignore_errors=True),
        network_task(name="front", ipam_config=[{"gateway": "10.77.0.9"}], ignore_errors=True),
        network_task(name="front", driver="bridge", ignore_errors=True),
        network_task(name="front", internal=True, force=True, check_mode=True),
    )
    *failed, forced_check = refusals
    for result, option in zip(failed, ["attachable", "internal", "labels", "ipam_config[0].subnet",
                                       "ipam_config[0].gateway", "driver"]):
        assert result["failed"] and option in result["msg"], (option, result)
    assert "network front exists with other settings: internal (False, asked True)" in failed[1]["msg"]
    assert "force=true" in failed[1]["msg"]
    assert "value of driver must be one of: overlay, got: bridge" in failed[5]["msg"]
    assert forced_check["changed"] and forced_check["rebuilt"] and forced_check["changes"] == ["internal"]
    assert inspect(manager, "network", "front") == cli, "a refused or checked change altered the network"

    # A service on the network: the module resolves the name to the ID the manager stores, so a second run
    # changes nothing. The manager refuses to remove the network while the service uses it, naming it.
    web = {"name": "web", "image": image, "command": WEB, "networks": ["front"]}
    placed, placed_again, in_use, forced_in_use = playbooks.run(
        service_task(**web, wait=True, wait_timeout=60),
        service_task(**web),
        network_task(name="front", state="absent", ignore_errors=True),
        network_task(**dict(front, internal=True), force=True, ignore_errors=True),
    )
    assert placed["changed"] and not placed_again["changed"], placed_again
    assert placed["service"]["Spec"]["TaskTemplate"]["Networks"] == [{"Target": cli["Id"]}]
    for result in (in_use, forced_in_use):
        assert result["failed"] and result["status"] == 403, result
        assert result["msg"] == "network front is in use by service(s) web: remove them first", result
    assert inspect(manager, "network", "front")["Id"] == cli["Id"]

    removed_service, rebuilt, removed_check, removed, removed_again = playbooks.run(
        service_task(name="web", state="absent", wait=True),
        network_task(**dict(front, ipam_config=[{"subnet": "10.78.0.0/24"}]), force=True, diff=True),
        network_task(name="front", state="absent", check_mode=True),
        network_task(name="front", state="absent"),
        network_task(name="front", state="absent"),
    )
    assert rebuilt["changed"] and rebuilt["rebuilt"] and rebuilt["changes"] == ["ipam_config[0].subnet"], rebuilt
    assert rebuilt["diff"]["before"]["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1"}]
    assert rebuilt["diff"]["after"]["IPAM"]["Config"] == [{"Subnet": "10.78.0.0/24", "Gateway": None}]
    assert rebuilt["network"]["Id"] != cli["Id"]
    assert rebuilt["network"]["IPAM"]["Config"] == [{"Subnet": "10.78.0.0/24", "Gateway": "10.78.0.1"}]
    assert removed_check["changed"] and removed["changed"] and not removed_again["changed"]
    assert "front" not in manager.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_root_ca_show_rotate_check_diff_idempotence_and_errors(cluster, playbooks):
    _, manager, worker = cluster
    first = manager.docker("swarm", "ca").stdout.strip()
    external, other = RootCA.generate(), RootCA.generate()
    given = {"ca_cert": external.cert_pem.decode(), "ca_key": (external.key_pem or b"").decode()}
    shown, checked, rotated = playbooks.run(
        {"name": "show", "swarm.cluster.ca": {}},
        {"name": "rotate in check mode", "swarm.cluster.ca": {"rotate": True}, "check_mode": True, "diff": True},
        {"name": "rotate", "swarm.cluster.ca": {"rotate": True, "wait": True, "wait_timeout": 120}},
    )
    assert not shown["changed"] and shown["root_ca"].strip() == first and not shown["rotation_in_progress"]
    assert checked["changed"] and checked["actions"] == ["Root CA rotation would start"]
    assert checked["diff"]["before"]["root_ca"].strip() == first and checked["diff"]["after"]["rotation_in_progress"]
    second = manager.docker("swarm", "ca").stdout.strip()
    assert rotated["changed"] and second != first and rotated["root_ca"].strip() == second
    assert rotated["nodes_rotated"] == "2 of 2" and not rotated["rotation_in_progress"]

    bad, moved, again = playbooks.run(
        {"name": "key of another CA", "swarm.cluster.ca": {**given, "ca_key": (other.key_pem or b"").decode()},
         "ignore_errors": True},
        {"name": "given root", "swarm.cluster.ca": {**given, "wait": True}},
        {"name": "given root again", "swarm.cluster.ca": {**given, "wait": True}},
    )
    assert bad["failed"] and "SigningCAKey" in bad["msg"] and bad["status"] == 400, bad
    assert moved["changed"] and moved["root_ca"].strip() == external.cert_pem.decode().strip()
    assert not again["changed"] and again["actions"] == ["Root CA rotation finished: 2 of 2 nodes"]
    for node in (manager, worker):
        ca_file = (node.data_dir / "certificates" / "swarm-root-ca.crt").read_text()
        assert ca_file.strip() == external.cert_pem.decode().strip()
