"""Bad input on every route: Docker's status codes, a message naming what is wrong, and nothing stored."""

import json
import tempfile
from pathlib import Path

import pytest

from harness.cluster import SwarmNode
from harness.hosts import Lab
from harness.image import busybox_image

pytestmark = pytest.mark.integration


def call(node: SwarmNode, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict]:
    return node.api(method, path, body=body, raw=raw)


@pytest.fixture(scope="module")
def pair():
    base = Path(tempfile.mkdtemp(prefix="swt-", dir="/tmp"))
    lab = Lab(base)
    try:
        image, archive = busybox_image(Path("/var/tmp/swarm-test-cache"))
        hosts = lab.add_hosts("m1", "w1")
        nodes = [SwarmNode(h) for h in hosts]
        for host, node in zip(hosts, nodes):
            host.load_image(archive)
            node.start()
        nodes[0].init()
        nodes[1].join(nodes[0])
        yield image, nodes[0], nodes[1]
    finally:
        lab.cleanup()


SPEC = {"Name": "ok", "TaskTemplate": {"ContainerSpec": {"Image": "local/busybox:1", "Args": ["sleep", "9"]}}}


def with_(path: str, value: object) -> dict:
    spec = json.loads(json.dumps(SPEC))
    target = spec
    keys = path.split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    return spec


@pytest.mark.parametrize(
    "body,raw,status,words",
    [
        (None, b"", 400, ["request body is empty"]),
        (None, b"{not json", 400, ["not valid JSON"]),
        ({"Name": "x"}, None, 400, ["TaskTemplate: is required"]),
        (with_("TaskTemplate.ContainerSpec.Image", ""), None, 400, ["TaskTemplate.ContainerSpec.Image"]),
        (with_("TaskTemplate.Placement", {"Constraints": ["node.role=worker"]}), None, 400, ["no operator"]),
        (with_("TaskTemplate.Placement", {"Constraints": ["node.colour==red"]}), None, 400, ["unknown key"]),
        (with_("Mode", {"Replicated": {"Replicas": -1}}), None, 400, ["Mode.Replicated.Replicas"]),
        (with_("Mode", {"Replicated": {}, "Global": {}}), None, 400, ["only one mode"]),
        (with_("UpdateConfig", {"Delay": "1x"}), None, 400, ["UpdateConfig.Delay", "invalid duration"]),
        (with_("UpdateConfig", {"FailureAction": "explode"}), None, 400, ["UpdateConfig.FailureAction"]),
        (with_("EndpointSpec", {"Ports": [{"TargetPort": 70000}]}), None, 400, ["EndpointSpec.Ports.0.TargetPort"]),
        (with_("TaskTemplate.RestartPolicy", {"Condition": "sometimes"}), None, 400, ["RestartPolicy.Condition"]),
        (with_("TaskTemplate.ContainerSpec.Mounts", [{"Type": "bind", "Target": "/x"}]), None, 400, ["Source is required"]),
        (with_("TaskTemplate.ContainerSpec.Env", ["=x"]), None, 400, ["invalid environment variable"]),
        (with_("Name", "bad name!"), None, 400, ["Name"]),
        (with_("TaskTemplate.Networks", [{"Target": "nonet"}]), None, 400, ["network nonet not found"]),
    ],
)
def test_service_create_refuses(pair, body, raw, status, words):
    _, manager, _ = pair
    got, answer = call(manager, "POST", "/services/create", body=body, raw=raw)
    assert got == status, answer
    for word in words:
        assert word in answer["message"], answer
    assert call(manager, "GET", "/services")[1] == [], "nothing may be stored after bad input"


def test_durations_in_go_form_are_stored_as_nanoseconds(pair):
    _, manager, _ = pair
    status, created = call(manager, "POST", "/services/create", with_("UpdateConfig", {"Delay": "1m30s"}))
    assert status == 201, created
    try:
        _, service = call(manager, "GET", f"/services/{created['ID']}")
        assert service["Spec"]["UpdateConfig"]["Delay"] == 90_000_000_000
        assert service["Spec"]["TaskTemplate"]["RestartPolicy"] == {
            "Condition": "any", "Delay": 5_000_000_000, "MaxAttempts": 0, "Window": 0
        }
        # Same name again: a conflict, and the first stays as it was.
        assert call(manager, "POST", "/services/create", SPEC)[0] == 409
        # Updates need the version read, and refuse a stale one.
        version = service["Version"]["Index"]
        assert call(manager, "POST", f"/services/{created['ID']}/update", SPEC)[0] == 400
        assert call(manager, "POST", f"/services/{created['ID']}/update?version={version}", SPEC)[0] == 200
        got, answer = call(manager, "POST", f"/services/{created['ID']}/update?version={version}", SPEC)
        assert got == 409 and "out of sequence" in answer["message"]
        got, answer = call(manager, "POST", f"/services/{created['ID']}/update?version=x", SPEC)
        assert got == 400 and "version" in answer["message"]
        got, answer = call(manager, "POST", f"/services/{created['ID']}/update?version={version + 1}",
                           with_("Mode", {"Global": {}}))
        assert got == 400 and "mode change" in answer["message"]
        # Found by the API fuzz: an update could rename the service; Swarm refuses, and so does this one.
        got, answer = call(manager, "POST", f"/services/{created['ID']}/update?version={version + 1}",
                           with_("Name", "renamed"))
        assert got == 400 and "Name: renaming services is not supported" in answer["message"]
    finally:
        call(manager, "DELETE", f"/services/{created['ID']}")


@pytest.mark.parametrize(
    "method,path,body,status,words",
    [
        ("GET", "/services/nope", None, 404, ["service nope not found"]),
        ("DELETE", "/services/nope", None, 404, ["service nope not found"]),
        ("GET", "/nodes/nope", None, 404, ["node nope not found"]),
        ("GET", "/tasks/nope", None, 404, ["task nope not found"]),
        ("GET", "/tasks?filters=%7Bbad", None, 400, ["invalid filters"]),
        ("GET", "/tasks?filters=%7B%22colour%22%3A%5B%22x%22%5D%7D", None, 400, ["invalid filter 'colour'"]),
        ("GET", "/tasks?filters=%7B%22desired-state%22%3A%5B%22x%22%5D%7D", None, 400, ["desired-state=x"]),
        ("GET", "/services?status=maybe", None, 400, ["status"]),
        ("GET", "/nodes?filters=%7B%22role%22%3A3%7D", None, 400, ["invalid filter 'role'"]),
        ("POST", "/swarm/join", {"RemoteAddrs": ["127.0.0.1:9"], "JoinToken": "SWMTKN-1-abc"}, 503, ["already part of a swarm"]),
        ("POST", "/swarm/join", {"RemoteAddrs": [], "JoinToken": "x"}, 400, ["RemoteAddrs"]),
        ("POST", "/swarm/init", {}, 503, ["already part of a swarm"]),
        ("POST", "/swarm/update?version=1", {"Dispatcher": {"HeartbeatPeriod": 5}}, 400, ["Dispatcher.HeartbeatPeriod"]),
        ("POST", "/swarm/update?version=1", {"CAConfig": {"NodeCertExpiry": "10m"}}, 400, ["NodeCertExpiry", "at least 1h"]),
        ("POST", "/swarm/update?version=1", {"Labels": {"swarm.gossip.key-rotation": "30s"}}, 400,
         ["Labels", "swarm.gossip.key-rotation", "at least 1m"]),
        ("GET", "/nope", None, 404, ["page not found"]),
    ],
)
def test_routes_refuse(pair, method, path, body, status, words):
    _, manager, _ = pair
    got, answer = call(manager, method, path, body=body)
    assert got == status, answer
    for word in words:
        assert word in answer["message"], answer


def test_node_update_and_remove_refuse(pair):
    _, manager, worker = pair
    _, node = call(manager, "GET", "/nodes/w1")
    version = node["Version"]["Index"]
    got, answer = call(manager, "POST", f"/nodes/w1/update?version={version}", {"Availability": "sleepy"})
    assert got == 400 and "Availability" in answer["message"]
    got, answer = call(manager, "POST", f"/nodes/m1/update?version={call(manager, 'GET', '/nodes/m1')[1]['Version']['Index']}",
                       {"Role": "worker"})
    assert got == 400 and "last manager" in answer["message"]
    got, answer = call(manager, "DELETE", "/nodes/w1")
    assert got == 400 and "not down" in answer["message"]
    assert call(manager, "GET", "/nodes/w1")[1]["Spec"]["Availability"] == "active"


def test_worker_socket_is_not_a_manager(pair):
    _, _, worker = pair
    for path in ("/services", "/nodes", "/tasks", "/swarm"):
        got, answer = call(worker, "GET", path)
        assert got == 503
        assert "Worker nodes can't be used to view or modify cluster state" in answer["message"]


def test_docker_cli_prints_the_message(pair):
    image, manager, _ = pair
    result = manager.docker("service", "create", "--constraint", "node.colour==red", image, check=False)
    assert result.returncode != 0
    assert "unknown key 'node.colour'" in result.stderr, result.stderr
    result = manager.docker("swarm", "join", "--token", "SWMTKN-1-bogus", "127.0.0.1:9", check=False)
    assert result.returncode != 0 and "already part of a swarm" in result.stderr


def test_published_ingress_ports_are_unique_and_assigned(pair):
    _, manager, _ = pair
    web = with_("EndpointSpec", {"Ports": [{"TargetPort": 80, "PublishedPort": 8080}, {"TargetPort": 443}]})
    status, first = call(manager, "POST", "/services/create", web)
    assert status == 201, first
    try:
        _, service = call(manager, "GET", f"/services/{first['ID']}")
        assert [p["PublishedPort"] for p in service["Endpoint"]["Ports"]] == [8080, 30000]
        clash = {**with_("EndpointSpec", {"Ports": [{"TargetPort": 81, "PublishedPort": 8080}]}), "Name": "clash"}
        got, answer = call(manager, "POST", "/services/create", clash)
        assert got == 400 and f"'8080/tcp' is already in use by service {first['ID']}" in answer["message"], answer
        assert [s["Spec"]["Name"] for s in call(manager, "GET", "/services")[1]] == ["ok"]
        # An update keeps the assigned port; the CLI shows both.
        version = service["Version"]["Index"]
        assert call(manager, "POST", f"/services/{first['ID']}/update?version={version}", web)[0] == 200
        _, service = call(manager, "GET", f"/services/{first['ID']}")
        assert [p["PublishedPort"] for p in service["Endpoint"]["Ports"]] == [8080, 30000]
        assert "*:8080->80/tcp" in manager.docker("service", "ls", "--format", "{{.Ports}}").stdout
    finally:
        call(manager, "DELETE", f"/services/{first['ID']}")
    # Removing the service frees its ports.
    status, again = call(manager, "POST", "/services/create", clash)
    assert status == 201, again
    call(manager, "DELETE", f"/services/{again['ID']}")


def _net(**fields) -> dict:
    return {"Name": "n1", "Driver": "overlay", **fields}


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"Name": "n1"}, 400, ["Driver: only 'overlay'", "'bridge'"]),
        (_net(Name=""), 400, ["Name"]),
        (_net(IPAM={"Config": [{"Subnet": "10.9.9.1/24"}]}), 400, ["IPAM.Config.Subnet", "invalid subnet"]),
        (_net(IPAM={"Config": [{"Subnet": "10.0.0.0/16"}]}), 400, ["IPAM.Config.Subnet", "overlaps", "10.0.0.0/24"]),
        (_net(IPAM={"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.8.0.1"}]}), 400, ["IPAM.Config.Gateway"]),
        (_net(EnableIPv6=True), 400, ["EnableIPv6"]),
        (_net(Options={"encrypted": ""}), 400, ["Options.encrypted"]),
        (_net(Ingress=True), 403, ["ingress network ingress is already present"]),
        (_net(Name="ingress"), 409, ["network with name ingress already exists"]),
    ],
)
def test_network_create_refuses(pair, body, status, words):
    _, manager, _ = pair
    before = call(manager, "GET", "/networks")[1]
    got, answer = call(manager, "POST", "/networks/create", body=body)
    assert got == status, answer
    for word in words:
        assert word in answer["message"], answer
    assert call(manager, "GET", "/networks")[1] == before, "nothing may be stored after bad input"


def test_service_cannot_attach_to_ingress_or_twice(pair):
    _, manager, _ = pair
    assert call(manager, "POST", "/networks/create", body=_net(Name="twice"))[0] == 201
    for networks, words in (([{"Target": "ingress"}], "explicitly attached to the ingress network"),
                            ([{"Target": "twice"}, {"Target": "twice"}], "attached twice")):
        got, answer = call(manager, "POST", "/services/create", body=with_("TaskTemplate.Networks", networks))
        assert got == 400 and words in answer["message"], answer
    assert call(manager, "GET", "/services")[1] == []
    assert call(manager, "DELETE", "/networks/twice")[0] == 204
