"""The data plane on a real cluster: overlay networks, the routing mesh on every node, service discovery,
isolation between networks, and a dead node's tasks leaving the mesh and DNS.

Three lab hosts (one manager, two workers), each with its own Docker engine and agent; requests come from
the test process (in the lab bridge's namespace) to each node's published port, and from task containers
to names on their network.
"""
import collections
import re
import subprocess
import sys
import threading
import time

import pytest

from harness.cluster import HOSTNAME_WEB, SwarmNode, fetch_in, http_get, running_tasks, start_cluster, wait_for

pytestmark = pytest.mark.integration

WEB = HOSTNAME_WEB
IMAGE = "local/busybox:1"


@pytest.fixture
def cluster(lab, busybox):
    _, archive = busybox
    manager, *workers = start_cluster(lab.add_hosts("m1", "w1", "w2"), archive)
    return manager, workers


def task_container(nodes: list[SwarmNode], service: str) -> tuple[SwarmNode, str]:
    for node in nodes:
        names = node.host.docker("ps", "--filter", f"label=com.docker.swarm.service.name={service}",
                                 "--format", "{{.Names}}").stdout.decode().split()
        if names:
            return node, names[0]
    raise AssertionError(f"no running container of service {service}")


def resolve(node: SwarmNode, container: str, name: str) -> set[str]:
    out = node.host.docker("exec", container, "nslookup", name, check=False).stdout.decode()
    # busybox nslookup prints the server first, then "Name: ... Address: ..." lines for the answer.
    answer = out.split("Name:", 1)[1] if "Name:" in out else ""
    return set(re.findall(r"Address(?: \d+)?:\s*(\d+\.\d+\.\d+\.\d+)", answer))


def test_overlay_mesh_and_discovery(cluster):
    manager, workers = cluster
    nodes = [manager, *workers]
    docker = manager.docker

    docker("network", "create", "-d", "overlay", "mynet")
    docker("network", "create", "-d", "overlay", "--subnet", "10.123.0.0/24", "other")
    listed = docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.split("\n")
    assert {"mynet overlay swarm", "other overlay swarm", "ingress overlay swarm"} <= set(listed)
    assert docker("network", "inspect", "other", "--format", "{{(index .IPAM.Config 0).Subnet}}").stdout.strip() \
        == "10.123.0.0/24"

    docker("service", "create", "--name", "web", "--replicas", "3", "--network", "mynet",
           "--publish", "published=8080,target=80", IMAGE, *WEB)
    docker("service", "create", "--name", "rr", "--replicas", "2", "--network", "mynet",
           "--endpoint-mode", "dnsrr", IMAGE, *WEB)
    docker("service", "create", "--name", "client", "--network", "mynet", IMAGE, "sleep", "1000000")
    docker("service", "create", "--name", "stranger", "--network", "other", IMAGE, *WEB)
    wait_for("all tasks running", lambda: [len(running_tasks(manager, s)) for s in ("web", "rr", "client", "stranger")]
             == [3, 2, 1, 1], timeout=120)
    web_tasks = running_tasks(manager, "web")
    web_ips = {a["Addresses"][0].split("/")[0] for t in web_tasks for a in t["NetworksAttachments"]
               if a["Network"]["Spec"]["Name"] == "mynet"}
    names = {t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in web_tasks}
    assert len(web_ips) == 3
    vips = {v["NetworkID"]: v["Addr"].split("/")[0]
            for v in manager.json("service", "inspect", "web")[0]["Endpoint"]["VirtualIPs"]}
    mynet_id = docker("network", "inspect", "mynet", "--format", "{{.Id}}").stdout.strip()

    # The routing mesh: port 8080 of every node answers, and spreads over all three tasks.
    for node in nodes:
        seen = collections.Counter()
        wait_for(f"8080 answering on {node.name}", lambda: http_get(node.host.ip, 8080) is not None, timeout=60)
        for _ in range(60):
            answer = http_get(node.host.ip, 8080)
            assert answer is not None, f"a request to {node.name}:8080 failed"
            seen[answer] += 1
        assert set(seen) == names, f"{node.name}:8080 reached {dict(seen)}, expected every task of {names}"
        assert min(seen.values()) >= 8, f"uneven shares through {node.name}: {dict(seen)}"

    # Discovery from a task on the same network.
    host, client = task_container(nodes, "client")
    wait_for("web resolving to its VIP", lambda: resolve(host, client, "web") == {vips[mynet_id]}, timeout=30)
    assert resolve(host, client, "tasks.web") == web_ips
    rr_ips = {a["Addresses"][0].split("/")[0] for t in running_tasks(manager, "rr") for a in t["NetworksAttachments"]}
    assert resolve(host, client, "rr") == rr_ips, "a dnsrr service resolves to its tasks' addresses"
    answers = {fetch_in(host.host, client, "http://web/")[1]
               for _ in range(30)}
    assert answers == names, "requests to the VIP reach every task"
    # Isolation: nothing of the other network is reachable, or even named.
    stranger = running_tasks(manager, "stranger")[0]["NetworksAttachments"][0]["Addresses"][0].split("/")[0]
    assert fetch_in(host.host, client, f"http://{stranger}/")[0] != 0
    assert resolve(host, client, "stranger") == set()

    # A node running a web task dies: the other nodes' mesh and DNS let go of its tasks.
    victim_task = next(t for t in web_tasks if t["NodeID"] != manager.node_id)
    victim = next(n for n in workers if n.node_id == victim_task["NodeID"])
    dead_ip = next(a["Addresses"][0].split("/")[0] for a in victim_task["NetworksAttachments"]
                   if a["Network"]["ID"] == mynet_id)
    survivors = [n for n in nodes if n is not victim]
    if host is victim:
        docker("service", "scale", "client=0")
        docker("service", "scale", "client=1")
        wait_for("client running again", lambda: len(running_tasks(manager, "client")) == 1, timeout=60)
        host, client = task_container(survivors, "client")
    # The node vanishes: its agent dies and its link goes down (its containers, cut off, run on unseen).
    victim.kill()
    victim.host.run("ip", "link", "set", "eth0", "down")
    killed = time.monotonic()

    def mesh_whole() -> bool:
        return all(http_get(n.host.ip, 8080) is not None for n in survivors for _ in range(6))

    wait_for("every surviving node's 8080 answering every time", mesh_whole, timeout=30)
    wait_for("the dead task gone from DNS", lambda: dead_ip not in resolve(host, client, "tasks.web"), timeout=30)
    print(f"mesh and DNS whole again {time.monotonic() - killed:.1f}s after the kill")
    wait_for("web back to 3 running tasks",
             lambda: len([t for t in running_tasks(manager, "web") if t["NodeID"] != victim.node_id]) == 3,
             timeout=120)

    # A network in use cannot go; once its services are gone it can.
    refused = docker("network", "rm", "other", check=False)
    assert refused.returncode != 0 and "stranger" in refused.stderr
    docker("service", "rm", "stranger")
    docker("network", "rm", "other")
    assert "other" not in docker("network", "ls", "--format", "{{.Name}}").stdout.split()


COMPOSE = """
version: "3.8"
services:
  front:
    image: local/busybox:1
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["8081:80"]
    networks: [public, private]
    deploy:
      replicas: 2
  store:
    image: local/busybox:1
    command: ["sh", "-c", "mkdir -p /www && echo store > /www/index.html && exec httpd -f -p 80 -h /www"]
    networks:
      private:
        aliases: [db]
  probe:
    image: local/busybox:1
    command: ["sleep", "1000000"]
    networks: [public]
networks:
  public:
  private:
    driver: overlay
"""


def test_stack_deploy_ls_ps_services_rm(cluster, tmp_path):
    manager, workers = cluster
    docker = manager.docker
    compose = tmp_path / "compose.yml"
    compose.write_text(COMPOSE)
    docker("stack", "deploy", "-c", str(compose), "demo")
    assert docker("stack", "ls", "--format", "{{.Name}} {{.Services}}").stdout.split("\n")[0] == "demo 3"
    networks = docker("network", "ls", "--filter", "label=com.docker.stack.namespace=demo",
                      "--format", "{{.Name}}").stdout.split()
    assert sorted(networks) == ["demo_private", "demo_public"]
    wait_for("the stack's tasks running", lambda: docker("stack", "ps", "demo", "--filter", "desired-state=running",
                                                          "--format", "{{.CurrentState}}").stdout.count("Running") == 4,
             timeout=120)
    services = docker("stack", "services", "demo", "--format", "{{.Name}} {{.Replicas}}").stdout.split("\n")
    assert {"demo_front 2/2", "demo_store 1/1", "demo_probe 1/1"} <= set(services)

    # The published port answers on every node; the store is reached by its alias on the private network
    # from front, and probe (public only) can reach front by name but not the store.
    for node in (manager, *workers):
        wait_for(f"8081 on {node.name}", lambda: http_get(node.host.ip, 8081) is not None, timeout=60)
    host, front = task_container([manager, *workers], "demo_front")
    got = fetch_in(host.host, front, "http://db/")[1]
    assert got == "store"
    host, probe = task_container([manager, *workers], "demo_probe")
    assert fetch_in(host.host, probe, "http://front/")[0] == 0
    assert resolve(host, probe, "store") == set() and resolve(host, probe, "db") == set()

    # Host mode: the port answers only on the node that runs the task.
    docker("service", "create", "--name", "pinned", "--publish", "mode=host,published=9090,target=80", IMAGE, *WEB)
    wait_for("pinned running", lambda: len(running_tasks(manager, "pinned")) == 1, timeout=60)
    where = running_tasks(manager, "pinned")[0]["NodeID"]
    for node in (manager, *workers):
        if node.node_id == where:
            wait_for(f"9090 on {node.name}", lambda: http_get(node.host.ip, 9090) is not None, timeout=30)
        else:
            assert http_get(node.host.ip, 9090) is None, f"host-mode port answered on {node.name}"

    docker("stack", "rm", "demo")
    wait_for("the stack's networks gone", lambda: not docker(
        "network", "ls", "--filter", "label=com.docker.stack.namespace=demo", "-q").stdout.strip(), timeout=60)
    assert docker("stack", "ls", "--format", "{{.Name}}").stdout.strip() == ""


def test_rolling_updates_and_drain_drop_no_request(cluster):
    """Tasks leave the mesh before they stop: a client hammering the published port sees no failure while
    the service is updated one task at a time (both orders) and while a node is drained."""
    manager, workers = cluster
    nodes = [manager, *workers]
    docker = manager.docker
    docker("service", "create", "--name", "steady", "--replicas", "3", "--stop-grace-period", "2s",
           "--update-parallelism", "1", "--publish", "published=8082,target=80", IMAGE, *WEB)
    wait_for("steady running", lambda: len(running_tasks(manager, "steady")) == 3, timeout=120)
    for node in nodes:
        wait_for(f"8082 on {node.name}", lambda: http_get(node.host.ip, 8082) is not None, timeout=60)

    failures: list[str] = []
    served = collections.Counter()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            for node in nodes:
                answer = http_get(node.host.ip, 8082)
                if answer is None:
                    failures.append(f"{node.name} at {time.monotonic():.1f}")
                else:
                    served[answer] += 1

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        for order in ("stop-first", "start-first"):
            docker("service", "update", "--force", "--update-order", order, "steady")
            wait_for(f"{order} update done", lambda: len(running_tasks(manager, "steady")) == 3 and "completed"
                     in docker("service", "inspect", "--format", "{{.UpdateStatus.State}}", "steady").stdout,
                     timeout=180)
        docker("node", "update", "--availability", "drain", workers[0].name)
        wait_for("steady off the drained node", lambda: len(running_tasks(manager, "steady")) == 3 and all(
            t["NodeID"] != workers[0].node_id for t in running_tasks(manager, "steady")), timeout=120)
        time.sleep(2)
    finally:
        stop.set()
        thread.join()
    assert len(served) >= 6, f"requests reached only {len(served)} tasks over two updates: {dict(served)}"
    assert failures == [], f"{len(failures)} requests failed of {sum(served.values()) + len(failures)}: {failures[:10]}"


def test_rebalance_spreads_a_service_again(cluster):
    manager, workers = cluster
    docker = manager.docker
    docker("node", "update", "--availability", "drain", workers[1].name)
    docker("service", "create", "--name", "lopsided", "--replicas", "4", "--stop-grace-period", "1s", IMAGE, *WEB)
    wait_for("4 running", lambda: len(running_tasks(manager, "lopsided")) == 4, timeout=120)
    docker("node", "update", "--availability", "active", workers[1].name)
    assert all(t["NodeID"] != workers[1].node_id for t in running_tasks(manager, "lopsided")), \
        "Swarm moves nothing back by itself"
    done = subprocess.run([sys.executable, "-m", "swarm_agent.cli.swarmctl", "-H", f"unix://{manager.socket}",
                           "service", "rebalance", "lopsided"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    wait_for("lopsided spread over all three nodes", lambda: len(
        {t["NodeID"] for t in running_tasks(manager, "lopsided")}) == 3
        and len(running_tasks(manager, "lopsided")) == 4, timeout=180)
