"""Secrets and configs on a real cluster, driven by the docker CLI: stored sealed, delivered only to the nodes
running a task that uses them, as read-only files with their owner and mode, gone when the task goes;
a restarted manager reads them again, and with autolock waits for its unlock key first."""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path

import pytest

from harness.cluster import SwarmNode, agent_log, start_agent, start_cluster, wait_for

pytestmark = pytest.mark.integration

PLAIN = "s3cr3t-Value-7f1c9a"
CONFIG_TEXT = "listen 8080\n"
STACK = """
version: "3.8"
services:
  web:
    image: {image}
    command: ["sleep", "3600"]
    secrets:
      - source: api_key
        target: key
        mode: 0400
    configs:
      - source: conf
        target: /etc/app.conf
    deploy:
      placement:
        constraints: [node.hostname == w2]
secrets:
  api_key:
    file: ./api_key.txt
configs:
  conf:
    file: ./app.conf
"""


def files_holding(node: SwarmNode, needle: bytes) -> list[str]:
    """Every file on disk under the node's data dir (etcd's WAL and database included, the tmpfs of task
    files not) that contains ``needle``."""
    memory = Path(node.data_dir) / "task-secrets"
    return [str(p) for p in Path(node.data_dir).rglob("*")
            if p.is_file() and memory not in p.parents and needle in p.read_bytes()]


def task_files(node: SwarmNode) -> list[Path]:
    root = Path(node.data_dir) / "task-secrets"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def container_of(node: SwarmNode, service: str) -> str:
    return wait_for(f"a running container of {service} on {node.name}", lambda: node.host.docker(
        "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").stdout.decode().strip())


def test_secrets_reach_only_the_nodes_that_need_them(lab, busybox):
    image, archive = busybox
    manager, w1, w2 = start_cluster(lab.add_hosts("m1", "w1", "w2"), archive, drain_manager=True)

    secret_id = manager.docker("secret", "create", "--label", "team=db", "db_pw", "-", input=PLAIN).stdout.strip()
    manager.docker("config", "create", "site.conf", "-", input=CONFIG_TEXT)
    assert manager.docker("secret", "ls", "--format", "{{.ID}} {{.Name}}").stdout.split() == [secret_id, "db_pw"]
    inspected = manager.json("secret", "inspect", "db_pw")[0]
    assert inspected["ID"] == secret_id and inspected["Spec"]["Labels"] == {"team": "db"}
    assert "Data" not in inspected["Spec"] and PLAIN not in json.dumps(inspected)
    config = manager.json("config", "inspect", "site.conf")[0]
    assert manager.docker("config", "inspect", "--format", "{{printf \"%s\" .Spec.Data}}",
                          "site.conf").stdout.strip() == CONFIG_TEXT.strip(), config
    duplicate = manager.docker("secret", "create", "db_pw", "-", input="other", check=False)
    assert duplicate.returncode != 0 and "secret db_pw already exists" in duplicate.stderr

    # Bad input is refused naming the field, without quoting the value; only labels may change.
    b64 = base64.b64encode(PLAIN.encode()).decode()
    for body, field in (({"Name": "bad name", "Data": b64}, "Name"), ({"Name": "big", "Data": "A" * 700_000}, "Data"),
                        ({"Name": "empty"}, "Data"), ({"Name": "drv", "Data": b64, "Driver": {"Name": "vault"}},
                                                      "Driver")):
        status, answer = manager.api("POST", "/secrets/create", body)
        assert status == 400 and f" {field}:" in f" {answer['message']}" and b64 not in answer["message"], answer
    version = inspected["Version"]["Index"]
    status, answer = manager.api("POST", f"/secrets/{secret_id[:6]}/update?version={version}",
                                 {"Name": "db_pw", "Data": base64.b64encode(b"changed").decode()})
    assert status == 400 and "only updates to Labels are allowed" in answer["message"], answer
    status, _ = manager.api("POST", f"/secrets/{secret_id}/update?version={version}",
                            {"Name": "db_pw", "Labels": {"team": "ops"}})
    assert status == 200 and manager.json("secret", "inspect", "db_pw")[0]["Spec"]["Labels"] == {"team": "ops"}
    status, answer = manager.api("POST", f"/secrets/{secret_id}/update?version={version}",
                                 {"Name": "db_pw", "Labels": {}})
    assert status == 409 and "update out of sequence" in answer["message"], answer
    assert manager.docker("secret", "ls", "-q", "--filter", "label=team=ops").stdout.split() == [secret_id]
    assert manager.docker("secret", "ls", "-q", "--filter", "name=db").stdout.split() == [secret_id]
    assert manager.docker("secret", "ls", "-q", "--filter", "label=team=db").stdout.split() == []

    manager.docker("service", "create", "-d", "--name", "app", "--constraint", "node.hostname==w1",
                   "--secret", "source=db_pw,target=pw,uid=100,gid=101,mode=0400",
                   "--config", "source=site.conf,target=/etc/site.conf",
                   image, "sleep", "3600")
    container = container_of(w1, "app")

    def in_task(*argv: str, check: bool = True):
        return w1.host.docker("exec", container, *argv, check=check)

    assert in_task("cat", "/run/secrets/pw").stdout.decode() == PLAIN
    assert in_task("ls", "-ln", "/run/secrets/pw").stdout.decode().split()[:4] == ["-r--------", "1", "100", "101"]
    assert in_task("cat", "/etc/site.conf").stdout.decode() == CONFIG_TEXT
    assert in_task("ls", "-ln", "/etc/site.conf").stdout.decode().split()[0] == "-r--r--r--"
    written = in_task("sh", "-c", "echo changed > /run/secrets/pw", check=False)
    assert written.returncode != 0 and b"Read-only file system" in written.stderr

    # The values are on w1, in memory, and on no other node.
    held = [p.read_bytes() for p in task_files(w1)]
    assert sorted(held) == sorted([PLAIN.encode(), CONFIG_TEXT.encode()])
    assert w1.host.run("findmnt", "-n", "-o", "FSTYPE", str(Path(w1.data_dir) / "task-secrets")).stdout.decode().strip() == "tmpfs"
    assert task_files(w2) == [] and task_files(manager) == []

    # Only references are stored with the service and its tasks.
    service_json = manager.docker("service", "inspect", "app").stdout
    refs = json.loads(service_json)[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert refs == [{"File": {"Name": "pw", "UID": "100", "GID": "101", "Mode": 0o400},
                     "SecretID": secret_id, "SecretName": "db_pw"}]
    task_ids = manager.docker("service", "ps", "-q", "--no-trunc", "app").stdout.split()
    assert PLAIN not in service_json + manager.docker("inspect", "--type", "task", *task_ids).stdout

    refused = manager.docker("secret", "rm", "db_pw", check=False)
    assert refused.returncode != 0 and "is in use by the following service: app" in refused.stderr
    refused = manager.docker("config", "rm", "site.conf", check=False)
    assert refused.returncode != 0 and "app" in refused.stderr
    unknown = manager.docker("service", "create", "-d", "--name", "bad", "--secret", "nope", image, check=False)
    assert unknown.returncode != 0 and "secret not found: nope" in unknown.stderr

    manager.docker("service", "rm", "app")
    wait_for("the values gone from w1", lambda: task_files(w1) == [])
    manager.docker("secret", "rm", "db_pw")
    manager.docker("config", "rm", "site.conf")
    assert manager.docker("secret", "ls", "-q").stdout.strip() == ""

    # A stack brings its own: created from files with the stack's label, removed with the stack.
    folder = Path(manager.host.root) / "stack"
    folder.mkdir()
    (folder / "api_key.txt").write_text(PLAIN)
    (folder / "app.conf").write_text(CONFIG_TEXT)
    (folder / "compose.yml").write_text(STACK.format(image=image))
    manager.docker("stack", "deploy", "-c", str(folder / "compose.yml"), "demo")
    assert manager.docker("secret", "ls", "--format", "{{.Name}}").stdout.split() == ["demo_api_key"]
    container = container_of(w2, "demo_web")
    assert w2.host.docker("exec", container, "cat", "/run/secrets/key").stdout.decode() == PLAIN
    assert w2.host.docker("exec", container, "cat", "/etc/app.conf").stdout.decode() == CONFIG_TEXT
    assert task_files(w1) == [] and len(task_files(w2)) == 2
    manager.docker("stack", "rm", "demo")
    wait_for("the stack's values gone from w2", lambda: task_files(w2) == [])
    assert manager.docker("secret", "ls", "-q").stdout.strip() == ""
    assert manager.docker("config", "ls", "-q").stdout.strip() == ""

    # Nothing on any disk (etcd's log and database included) and no log holds a value in the clear;
    # the scan does see what etcd stores in the clear, such as the secret's name.
    assert files_holding(manager, b"db_pw")
    for node in (manager, w1, w2):
        assert files_holding(node, PLAIN.encode()) == [], node.name
        assert PLAIN not in agent_log(node)
    # Nor what would make a manager, which is handed the data key: the join tokens.
    for role in ("manager", "worker"):
        token = manager.docker("swarm", "join-token", "-q", role).stdout.strip()
        assert token.startswith("SWMTKN-1-") and files_holding(manager, token.encode()) == [], role


def test_a_restarted_manager_reads_its_secrets_and_autolock_holds_it_until_unlocked(lab, busybox):
    image, archive = busybox
    node = start_agent(lab.add_host("m1"), archive)
    host = node.host
    out = node.docker("swarm", "init", "--autolock", "--advertise-addr", host.ip).stdout
    key = next(word for word in out.split() if word.startswith("SWMKEY-1-"))
    assert node.docker("swarm", "unlock-key", "-q").stdout.strip() == key
    node.docker("secret", "create", "token", "-", input=PLAIN)

    def restart() -> None:
        node.kill(signal.SIGKILL)
        node.start()

    def state() -> str:
        return node.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()

    restart()
    assert state() == "locked"
    locked = node.docker("secret", "ls", check=False)
    assert locked.returncode != 0 and "Swarm is encrypted and needs to be unlocked" in locked.stderr
    wrong = node.docker("swarm", "unlock", input="SWMKEY-1-" + "A" * 43 + "\n", check=False)
    assert wrong.returncode != 0 and "invalid key" in wrong.stderr
    node.docker("swarm", "unlock", input=key + "\n")
    assert state() == "active"

    # The data key is back: a new task reads the secret stored before the restart.
    node.docker("service", "create", "-d", "--name", "reader", "--secret", "token", image, "sleep", "3600")
    container = container_of(node, "reader")
    assert host.docker("exec", container, "cat", "/run/secrets/token").stdout.decode() == PLAIN

    # A rotated key replaces the old one; autolock off leaves a manager that restarts unlocked.
    key_file = Path(node.data_dir) / "swarm-data.key"
    sealed_before = key_file.read_text()
    new_key = node.docker("swarm", "unlock-key", "--rotate", "-q").stdout.strip()
    assert new_key.startswith("SWMKEY-1-") and new_key != key
    wait_for("the key file sealed anew", lambda: key_file.read_text() != sealed_before)
    restart()
    assert state() == "locked"
    stale = node.docker("swarm", "unlock", input=key + "\n", check=False)
    assert stale.returncode != 0 and "invalid key" in stale.stderr
    node.docker("swarm", "unlock", input=new_key + "\n")
    container = container_of(node, "reader")  # adopted across the restarts, still running
    assert host.docker("exec", container, "cat", "/run/secrets/token").stdout.decode() == PLAIN
    node.docker("swarm", "update", "--autolock=false")
    no_key = node.docker("swarm", "unlock-key", "-q", check=False)
    assert no_key.returncode != 0 and "no unlock key is set" in no_key.stderr
    wait_for("the key file unsealed", lambda: "sealed" not in key_file.read_text())
    restart()
    # Unlocked, it starts at once: pending while etcd is adopted and the manager starts.
    wait_for("the manager active again", lambda: state() == "active", timeout=30)
    assert node.docker("secret", "ls", "--format", "{{.Name}}").stdout.split() == ["token"]
    assert files_holding(node, PLAIN.encode()) == []
    assert PLAIN not in agent_log(node)

    # A locked manager leaves only when forced, and takes its etcd member and keys with it.
    node.docker("swarm", "update", "--autolock=true")
    wait_for("the key file sealed", lambda: "sealed" in key_file.read_text())
    restart()
    assert state() == "locked"
    refused = node.docker("swarm", "leave", check=False)
    assert refused.returncode != 0 and "Please unlock it first or use `--force`" in refused.stderr
    node.docker("swarm", "leave", "--force")
    assert state() == "inactive" and not key_file.exists()
    assert not (Path(node.data_dir) / "etcd" / "data").exists()


def test_only_managers_hold_the_data_key(lab, busybox):
    _, archive = busybox
    first, second = (start_agent(h, archive) for h in lab.add_hosts("m1", "m2"))
    first.init()
    second.join(first, role="manager")
    first.docker("config", "create", "site.conf", "-", input=CONFIG_TEXT)
    key_file = Path(second.data_dir) / "swarm-data.key"
    # The joining manager got the data key with its certificate: it opens values written by another manager.
    wait_for("m2 keeps the data key", key_file.exists)
    assert second.docker("config", "inspect", "--format", "{{printf \"%s\" .Spec.Data}}",
                         "site.conf").stdout == CONFIG_TEXT + "\n"
    first.docker("node", "demote", "m2")
    wait_for("m2 a worker without the key", lambda: second.docker(
        "info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() == "false" and not key_file.exists(),
        timeout=60)
    first.docker("node", "promote", "m2")
    wait_for("m2 a manager with the key again", key_file.exists, timeout=60)
