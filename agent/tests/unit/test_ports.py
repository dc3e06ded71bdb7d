"""Published-port allocation: cluster-wide ingress ports, auto-assigned from 30000-32767."""

import pytest

from swarm_agent.api.models import PortConfig
from swarm_agent.manager.ports import PortInUse, allocate


def port(target: int, published: int | None = None, mode: str = "ingress", proto: str = "tcp") -> PortConfig:
    return PortConfig(TargetPort=target, PublishedPort=published, PublishMode=mode, Protocol=proto)


def test_given_ports_are_kept_and_missing_ones_assigned_from_the_dynamic_range():
    got = allocate([port(80, 8080), port(443)], {("tcp", 30000): "other"}, "me")
    assert [p.PublishedPort for p in got] == [8080, 30001]


def test_a_port_of_another_service_is_refused_naming_it():
    with pytest.raises(PortInUse, match="'8080/tcp' is already in use by service web1 as an ingress port"):
        allocate([port(80, 8080)], {("tcp", 8080): "web1"}, "me")


def test_the_same_number_is_free_for_the_other_protocol_and_for_the_owner():
    assert allocate([port(53, 8053, proto="udp")], {("tcp", 8053): "dns"}, "me")[0].PublishedPort == 8053
    assert allocate([port(80, 8080)], {("tcp", 8080): "me"}, "me")[0].PublishedPort == 8080


def test_an_update_keeps_the_port_it_was_given():
    first = allocate([port(80)], {("tcp", 30000): "a"}, "me")
    assert first[0].PublishedPort == 30001
    again = allocate([port(80)], {("tcp", 30000): "a", ("tcp", 30001): "me"}, "me", previous=first)
    assert again[0].PublishedPort == 30001


def test_two_ports_of_one_service_get_different_numbers():
    got = allocate([port(80), port(81)], {}, "me")
    assert [p.PublishedPort for p in got] == [30000, 30001]


def test_host_mode_ports_are_left_to_the_engine():
    assert allocate([port(80, mode="host")], {("tcp", 30000): "a"}, "me")[0].PublishedPort is None
