"""What follows from the gossip tables: mesh services, VIPs per bridge, DNS names, peers."""
from swarm_agent.api.models import NetworkAttachment, ServiceEndpoint, Task
from swarm_agent.net.endpoints import (
    Endpoint,
    NameTable,
    endpoint_value,
    mesh_key,
    mesh_state,
    parse_all,
    peers_by_network,
    vips_by_network,
)
from swarm_agent.net.mesh.model import Backend, Frontend

NET, ING = "netaaaaaaaaaaaaaaaaaaaaaa", "ingbbbbbbbbbbbbbbbbbbbbbb"


def _task(task_id: str, ip: str, ingress_ip: str | None = None, aliases=None) -> Task:
    attachments = [NetworkAttachment(Network={"ID": NET}, Addresses=[f"{ip}/24"], Aliases=aliases)]
    if ingress_ip:
        attachments.append(NetworkAttachment(Network={"ID": ING}, Addresses=[f"{ingress_ip}/24"]))
    return Task(ID=task_id, ServiceID="svc", Spec={"ContainerSpec": {"Image": "x"}}, NetworksAttachments=attachments)


ENDPOINT = ServiceEndpoint(
    Spec={"Mode": "vip"},
    Ports=[{"TargetPort": 80, "PublishedPort": 8080}, {"TargetPort": 53, "PublishedPort": 53, "PublishMode": "host"}],
    VirtualIPs=[{"NetworkID": NET, "Addr": "10.0.1.2/24"}, {"NetworkID": ING, "Addr": "10.0.0.2/24"}],
)


def _endpoints(*tasks: Task, endpoint: ServiceEndpoint = ENDPOINT) -> list[Endpoint]:
    good, errors = parse_all({t.ID: endpoint_value(t, "Web", endpoint) for t in tasks})
    assert errors == []
    return good


def test_a_running_task_publishes_its_addresses_vips_aliases_and_ingress_ports():
    value = endpoint_value(_task("t1", "10.0.1.5", "10.0.0.5", aliases=["www"]), "web", ENDPOINT)
    assert value["networks"][NET] == {"ip": "10.0.1.5", "vip": "10.0.1.2", "aliases": ["www"]}
    assert value["published"] == [["tcp", 8080, 80]], "host-mode ports are not the mesh's"


def test_mesh_has_a_vip_service_per_network_and_published_ports_on_ingress_only():
    eps = _endpoints(_task("t1", "10.0.1.5", "10.0.0.5"), _task("t2", "10.0.1.6", "10.0.0.6"))
    state = mesh_state(eps, {NET: "mynet", ING: "ingress"}, ING)
    on_net, on_ingress = state[mesh_key("svc", NET)], state[mesh_key("svc", ING)]
    assert on_net.vips == ("10.0.1.2",) and on_net.published == ()
    assert on_net.backends == (Backend("10.0.1.5"), Backend("10.0.1.6"))
    assert on_ingress.published == (Frontend("tcp", 8080, 80),)
    assert on_ingress.backends == (Backend("10.0.0.5"), Backend("10.0.0.6"))
    # A node without the network has no way to its tasks there: nothing of it in its mesh.
    assert list(mesh_state(eps, {ING: "ingress"}, ING)) == [mesh_key("svc", ING)]


def test_dnsrr_services_have_no_vip_and_resolve_to_their_tasks():
    dnsrr = ServiceEndpoint(Spec={"Mode": "dnsrr"})
    eps = _endpoints(_task("t1", "10.0.1.5", aliases=["db"]), _task("t2", "10.0.1.6"), endpoint=dnsrr)
    assert mesh_state(eps, {NET: "mynet"}, None) == {}
    assert vips_by_network(eps, {NET: "mynet"}) == {NET: set()}
    names = NameTable(eps)
    assert names.lookup(NET, "web") == ["10.0.1.5", "10.0.1.6"]
    assert names.lookup(NET, "db") == ["10.0.1.5"]
    assert names.lookup("othernet", "web") is None, "names are answered on their own network only"


def test_vip_services_resolve_to_the_vip_and_tasks_name_to_the_tasks():
    names = NameTable(_endpoints(_task("t1", "10.0.1.5"), _task("t2", "10.0.1.6")))
    assert names.lookup(NET, "web") == ["10.0.1.2"]
    assert names.lookup(NET, "tasks.web") == ["10.0.1.5", "10.0.1.6"]
    assert names.lookup(NET, "nothing") is None


def test_a_malformed_entry_is_reported_and_skipped():
    good, errors = parse_all({"t1": {"service": "s", "name": "n", "networks": {NET: {"ip": "not-an-ip"}}},
                              "t2": {"name": "n"}})
    assert good == [] and len(errors) == 2 and "t1" in errors[0]


def test_peers_per_network_leave_this_node_out_and_skip_bad_addresses():
    peers = peers_by_network({f"{NET}/me": {"addr": "172.29.0.11"}, f"{NET}/n2": {"addr": "172.29.0.12"},
                              f"{ING}/n3": {"addr": "bogus"}}, "me")
    assert peers == {NET: {"172.29.0.12"}}


def test_a_task_on_several_networks_is_known_by_its_address_on_each():
    both = Endpoint("t1", "s1", "app", "vip", {"net-a": "10.0.1.5", "net-b": "10.0.2.5", "net-c": "10.0.3.5"},
                    {}, {}, ())
    names = NameTable([both])
    assert names.networks_of("net-b", "10.0.2.5") == ["net-a", "net-c"]
    assert names.networks_of("net-a", "10.0.2.5") == [], "an address counts on its own network only"
    assert names.networks_of("net-b", "10.0.2.6") == []
