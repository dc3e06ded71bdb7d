"""The Docker SDK for Python drives a service through its life against a manager, unchanged."""

import docker
import pytest

from harness.cluster import SwarmNode, wait_for

pytestmark = pytest.mark.integration


def test_sdk_service_lifecycle(lab, busybox):
    image, archive = busybox
    hosts = lab.add_hosts("m1", "w1")
    nodes = [SwarmNode(h) for h in hosts]
    for host, node in zip(hosts, nodes):
        host.load_image(archive)
        node.start()
    manager, worker = nodes
    manager.init()
    worker.join(manager)

    client = docker.DockerClient(base_url=f"unix://{manager.socket}", version="1.41")
    try:
        assert client.info()["Swarm"]["ControlAvailable"] is True
        assert len(client.nodes.list()) == 2

        service = client.services.create(
            image, command=["sleep", "3600"], name="sdk", env=["A=1"], labels={"team": "x"},
            mode=docker.types.ServiceMode("replicated", replicas=2),
        )
        assert service.name == "sdk"
        assert client.services.get("sdk").attrs["Spec"]["Labels"] == {"team": "x"}

        def running() -> int:
            return sum(1 for t in client.services.get(service.id).tasks({"desired-state": "running"})
                       if t["Status"]["State"] == "running")

        wait_for("2 running tasks", lambda: running() == 2)

        service.reload()
        service.update(env=["A=2"])
        spec = client.services.get(service.id).attrs["Spec"]
        assert spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=2"]
        wait_for("tasks replaced with the new env", lambda: all(
            t["Spec"]["ContainerSpec"]["Env"] == ["A=2"]
            for t in client.services.get(service.id).tasks({"desired-state": "running"})
        ) and running() == 2)

        client.services.get(service.id).scale(3)
        wait_for("3 running tasks", lambda: running() == 3)

        client.services.get(service.id).remove()
        assert client.services.list() == []
        with pytest.raises(docker.errors.NotFound):
            client.services.get("sdk")
    finally:
        client.close()
