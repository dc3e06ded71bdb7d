"""Overlay address management: subnets, VXLAN IDs, addresses, and the leader's allocator."""
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_agent.api.models import (
    EndpointVirtualIP,
    IPAMPool,
    IPAMSettings,
    NetworkAttachmentConfig,
    NetworkSpec,
    Node,
    Service,
    ServiceEndpoint,
    ServiceSpec,
    Task,
    TaskState,
    TaskStatus,
)
from swarm_agent.manager.allocator import Allocator
from swarm_agent.manager.ipam import (
    FIRST_VNI,
    AddressBook,
    IpamError,
    choose_subnet,
    plan_network,
)
from swarm_agent.store.state import Snapshot, address_key


def spec(name: str = "net", subnet: str | None = None, ingress: bool = False) -> NetworkSpec:
    ipam = IPAMSettings(Config=[IPAMPool(Subnet=subnet)]) if subnet else None
    return NetworkSpec(Name=name, Driver="overlay", IPAM=ipam, Ingress=ingress)


def test_subnets_come_from_the_pool_in_order_skipping_taken_ones():
    assert choose_subnet(["10.0.0.0/8"], 24, []) == "10.0.0.0/24"
    assert choose_subnet(["10.0.0.0/8"], 24, ["10.0.0.0/24", "10.0.1.0/25"]) == "10.0.2.0/24"
    assert choose_subnet(["10.0.0.0/23", "10.9.0.0/16"], 24, ["10.0.0.0/23"]) == "10.9.0.0/24"
    with pytest.raises(IpamError, match="no free /24"):
        choose_subnet(["10.0.0.0/24"], 24, ["10.0.0.0/16"])


def test_a_given_subnet_is_checked_and_named_in_the_error():
    with pytest.raises(IpamError, match=r"IPAM.Config.Subnet: 10.0.0.128/25 overlaps the subnet 10.0.0.0/24"):
        plan_network("n1", spec(subnet="10.0.0.128/25"), ["10.0.0.0/8"], 24, ["10.0.0.0/24"], set())
    with pytest.raises(IpamError, match="IPAM.Config.Subnet: invalid subnet"):
        plan_network("n1", spec(subnet="10.0.0.1/24"), ["10.0.0.0/8"], 24, [], set())
    with pytest.raises(IpamError, match="not an IPv4 subnet"):
        plan_network("n1", spec(subnet="fd00::/64"), ["10.0.0.0/8"], 24, [], set())
    with pytest.raises(IpamError, match="too small"):
        plan_network("n1", spec(subnet="10.1.0.0/30"), ["10.0.0.0/8"], 24, [], set())


def test_vnis_ingress_gets_docker_s_and_others_the_next_free():
    ingress = plan_network("i", spec("ingress", ingress=True), ["10.0.0.0/8"], 24, [], set())
    assert (ingress.VNI, ingress.Subnet, ingress.Gateway) == (FIRST_VNI, "10.0.0.0/24", "10.0.0.1")
    user = plan_network("u", spec(), ["10.0.0.0/8"], 24, [ingress.Subnet], {FIRST_VNI, FIRST_VNI + 1})
    assert (user.VNI, user.Subnet) == (FIRST_VNI + 2, "10.0.1.0/24")


@given(st.sets(st.integers(min_value=2, max_value=14), max_size=12), st.integers(min_value=0, max_value=14))
def test_address_book_never_gives_a_taken_reserved_or_outside_address(taken_hosts, cursor):
    book = AddressBook("10.5.0.0/28", "10.5.0.1")
    book.cursor = int(ipaddress.IPv4Address("10.5.0.0")) + cursor
    taken = {f"10.5.0.{h}" for h in taken_hosts}
    free = {f"10.5.0.{h}" for h in range(2, 15)} - taken
    if not free:
        with pytest.raises(IpamError):
            book.take(taken)
        return
    got = book.take(taken)
    assert got in free


def test_address_book_moves_on_instead_of_reusing_a_freed_address():
    book = AddressBook("10.5.0.0/24", "10.5.0.1")
    first = book.take(set())
    second = book.take({first})
    assert book.take({second}) not in {first, second}, "a just-freed address is not handed out again at once"


def _state_with_network() -> tuple[Snapshot, Service]:
    network = plan_network("netA", spec("a", subnet="10.8.0.0/29"), ["10.0.0.0/8"], 24, [], set())
    service = Service(
        ID="svc1",
        Spec=ServiceSpec(Name="web", TaskTemplate={"ContainerSpec": {"Image": "x"},
                                                   "Networks": [NetworkAttachmentConfig(Target="netA", Aliases=["w"])]}),
        Endpoint=ServiceEndpoint(VirtualIPs=[EndpointVirtualIP(NetworkID="netA", Addr="10.8.0.2/29")]),
    )
    state = Snapshot(services={"svc1": service}, networks={"netA": network}, nodes={"n1": Node(ID="n1")})
    state.index_address(address_key("netA", "10.8.0.2"), "vip:svc1")
    return state, service


def _task(task_id: str, node: str | None = None) -> Task:
    return Task(ID=task_id, ServiceID="svc1", Spec={"ContainerSpec": {"Image": "x"}}, NodeID=node)


def test_allocator_gives_new_tasks_distinct_addresses_with_aliases_and_says_what_to_claim():
    state, _ = _state_with_network()
    tasks = [_task("t1"), _task("t2")]
    claims = Allocator().attach(tasks, state)
    addresses = [t.NetworksAttachments[0].Addresses[0] for t in tasks]
    assert len(set(addresses)) == 2 and "10.8.0.2/29" not in addresses and "10.8.0.1/29" not in addresses
    assert tasks[0].NetworksAttachments[0].Aliases == ["w"]
    assert tasks[0].NetworksAttachments[0].Network["ID"] == "netA"
    assert sorted(claims.values()) == ["task:t1", "task:t2"]


def test_allocator_leaves_a_task_without_address_when_the_subnet_is_full():
    state, _ = _state_with_network()
    tasks = [_task(f"t{i}") for i in range(6)]  # a /29 has 6 hosts: gateway and VIP leave 4
    claims = Allocator().attach(tasks, state)
    assert len(claims) == 4
    assert [t.NetworksAttachments is None for t in tasks] == [False] * 4 + [True] * 2


def test_nodes_get_an_address_once_they_run_a_task_there_and_gone_owners_are_released():
    state, _ = _state_with_network()
    allocator = Allocator()
    task = _task("t1", node="n1")
    allocator.attach([task], state)
    state.tasks["t1"] = task
    state.index_address(address_key("netA", task.NetworksAttachments[0].Addresses[0].split("/")[0]), "task:t1")
    node_claims = allocator.node_claims(state)
    assert list(node_claims.values()) == ["node:n1"]
    state.index_address(next(iter(node_claims)), "node:n1")
    assert allocator.node_claims(state) == {}
    assert state.node_networks["n1"]["netA"]

    assert allocator.garbage(state) == []
    state.tasks["t1"] = task.model_copy(update={"Status": TaskStatus(State=TaskState.FAILED)})
    assert allocator.garbage(state) == [address_key("netA", task.NetworksAttachments[0].Addresses[0].split("/")[0])]
    # An owner missing from the cache is released only if it is still missing at the next sweep.
    node_key = address_key("netA", state.node_networks["n1"]["netA"])
    del state.nodes["n1"]
    assert node_key not in allocator.garbage(state)
    assert node_key in allocator.garbage(state)


def test_every_node_gets_an_ingress_address_once_a_service_publishes_a_port():
    ingress = plan_network("ing", spec("ingress", ingress=True), ["10.0.0.0/8"], 24, [], set())
    service = Service(ID="svc1", Spec=ServiceSpec(Name="web", TaskTemplate={"ContainerSpec": {"Image": "x"}}))
    state = Snapshot(services={"svc1": service}, networks={"ing": ingress},
                     nodes={"n1": Node(ID="n1"), "n2": Node(ID="n2")})
    assert Allocator().node_claims(state) == {}
    service.Endpoint = ServiceEndpoint(Ports=[{"TargetPort": 80, "PublishedPort": 8080}])
    assert sorted(Allocator().node_claims(state).values()) == ["node:n1", "node:n2"]
