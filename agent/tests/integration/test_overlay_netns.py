"""The overlay driver on real hosts: bridges joined by VXLAN, tasks reaching each other across nodes,
networks isolated from each other, VIP addresses answered locally only.

Each host is a network namespace with its own Docker engine; the driver runs in the host's namespace as the
agent would (a Python subprocess entered with nsenter).
"""
import json
import sys
import tempfile
from pathlib import Path

import pytest

from harness.cluster import fetch_in
from harness.hosts import Lab
from harness.image import busybox_image

pytestmark = pytest.mark.integration

IMAGE = "local/busybox:1"

_DRIVER = """
import json, sys
from swarm_agent.net.overlay import LocalNetwork, Overlay
args = json.loads(sys.argv[1])
overlay = Overlay(args["docker_url"], args["underlay"])
try:
    for net in args["networks"]:
        local = LocalNetwork(**net["network"])
        overlay.ensure(local)
        overlay.set_peers(local.network_id, net["peers"])
        overlay.set_vips(local.network_id, net.get("vips", []))
    print(json.dumps(overlay.local_networks()))
finally:
    overlay.close()
"""


def drive(host, networks: list[dict]) -> dict:
    args = json.dumps({"docker_url": host.docker_url, "underlay": host.ip, "networks": networks})
    done = host.run(sys.executable, "-c", _DRIVER, args)
    return json.loads(done.stdout)


def net(network_id: str, name: str, vni: int, subnet: str, address: str, internal: bool = False) -> dict:
    return {"network_id": network_id, "name": name, "vni": vni, "subnet": subnet, "internal": internal,
            "address": address}


@pytest.fixture(scope="module")
def hosts():
    base = Path(tempfile.mkdtemp(prefix="swt-", dir="/tmp"))
    lab = Lab(base)
    try:
        _, archive = busybox_image(Path("/var/tmp/swarm-test-cache"))
        a, b = lab.add_hosts("ova", "ovb")
        for host in (a, b):
            host.load_image(archive)
        yield a, b
    finally:
        lab.cleanup()


def run_task(host, name: str, network: str, ip: str) -> None:
    host.docker("run", "-d", "--name", name, "--network", network, "--ip", ip, IMAGE,
                "sh", "-c", f"mkdir -p /www && echo {name} > /www/index.html && httpd -f -p 80 -h /www")


def test_tasks_reach_each_other_across_nodes_and_networks_stay_apart(hosts):
    a, b = hosts
    blue = "bluenet000000000000000001"
    red = "rednet0000000000000000002"
    on_a = [
        {"network": net(blue, "blue", 4101, "10.77.1.0/24", "10.77.1.10"), "peers": [b.ip], "vips": ["10.77.1.2"]},
        {"network": net(red, "red", 4102, "10.77.2.0/24", "10.77.2.10"), "peers": [b.ip]},
    ]
    on_b = [
        {"network": net(blue, "blue", 4101, "10.77.1.0/24", "10.77.1.11"), "peers": [a.ip], "vips": ["10.77.1.2"]},
        {"network": net(red, "red", 4102, "10.77.2.0/24", "10.77.2.11"), "peers": [a.ip]},
    ]
    assert drive(a, on_a) == {blue: "blue", red: "red"}
    assert drive(b, on_b) == {blue: "blue", red: "red"}
    # A second run changes nothing and fails on nothing: the agent restarting adopts what it finds.
    assert drive(a, on_a) == {blue: "blue", red: "red"}

    run_task(a, "blue-a", "blue", "10.77.1.20")
    run_task(b, "blue-b", "blue", "10.77.1.21")
    run_task(b, "red-b", "red", "10.77.2.21")

    code, body = fetch_in(a, "blue-a", "http://10.77.1.21/")
    assert (code, body) == (0, "blue-b"), "a task reaches a task of its network on another node"
    code, body = fetch_in(b, "blue-b", "http://10.77.1.20/")
    assert (code, body) == (0, "blue-a")
    code, _ = fetch_in(a, "blue-a", "http://10.77.2.21/")
    assert code != 0, "a task must not reach a task of another overlay network"
    # Each node answers for the VIP itself: its own bridge holds it, and ARP for it does not cross VXLAN.
    for host, container in ((a, "blue-a"), (b, "blue-b")):
        neigh = host.docker("exec", container, "sh", "-c", "ping -c1 -W2 10.77.1.2 >/dev/null; ip neigh show 10.77.1.2")
        # (/sys belongs to the test's own namespace here, so ask the kernel through ip.)
        link = host.run("ip", "-o", "link", "show", "sw-bluenet00000").stdout.decode()
        bridge_mac = link.split("link/ether ")[1].split()[0]
        assert bridge_mac in neigh.stdout.decode().lower(), neigh.stdout

    # Peers leave: the flood entry goes, so a new ARP cannot cross any more.
    drive(a, [{**on_a[0], "peers": []}, on_a[1]])
    fdb = a.run("bridge", "fdb", "show", "dev", "vx-bluenet00000").stdout.decode()
    assert f"dst {b.ip}" not in fdb


def test_an_internal_network_has_no_way_out(hosts):
    a, b = hosts
    inside = "internal0000000000000003"
    outside = "external0000000000000004"
    drive(a, [
        {"network": net(inside, "inside", 4103, "10.77.3.0/24", "10.77.3.10", internal=True), "peers": []},
        {"network": net(outside, "outside", 4104, "10.77.4.0/24", "10.77.4.10"), "peers": []},
    ])
    b.run("sh", "-c", "mkdir -p /tmp/ovw && echo lab > /tmp/ovw/index.html")
    server = b.spawn(["busybox", "httpd", "-f", "-p", "8099", "-h", "/tmp/ovw"], "httpd-outside")
    try:
        run_task(a, "in-a", "inside", "10.77.3.20")
        run_task(a, "out-a", "outside", "10.77.4.20")
        wait_for_ok = [fetch_in(a, "out-a", f"http://{b.ip}:8099/") for _ in range(3)]
        assert (0, "lab") in wait_for_ok, "a task of an ordinary overlay network reaches the outside"
        assert fetch_in(a, "in-a", f"http://{b.ip}:8099/")[0] != 0, "a task of an internal network must not"
    finally:
        b.kill(server)
