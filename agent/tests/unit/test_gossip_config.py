"""Gossip configuration and constructor arguments: bad values are refused with the field named."""
import pytest

from swarm_agent.net.gossip import Gossip, GossipConfig, Keyring
from swarm_agent.net.gossip.transport import parse_peer

RING = Keyring([bytes(16)])


@pytest.mark.parametrize("changes, message", [
    ({"probe_interval": 0}, "probe_interval=0: must be a positive number"),
    ({"gossip_nodes": 2.5}, "gossip_nodes=2.5: must be an integer"),
    ({"dead_reap": True}, "dead_reap=True"),
    ({"probe_timeout": 0.5}, "probe_timeout=0.5: must be shorter than probe_interval"),
    ({"max_packet_size": 100}, "max_packet_size=100: must be at least 512"),
])
def test_bad_config_is_refused(changes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GossipConfig(**changes)


@pytest.mark.parametrize("kwargs, message", [
    ({"node_id": ""}, "node_id ''"),
    ({"port": 70000}, "port 70000"),
    ({"bind_address": "0.0.0.0"}, "give advertise_address"),
    ({"bind_address": "somewhere"}, "advertise address 'somewhere'"),
    ({"keyring": b"k" * 16}, "expected a Keyring"),
])
def test_bad_constructor_arguments_are_refused(kwargs, message: str) -> None:
    arguments = {"node_id": "a", "bind_address": "127.0.0.1", "keyring": RING} | kwargs
    with pytest.raises(ValueError, match=message):
        Gossip(**arguments)


def test_wildcard_bind_with_an_advertised_address() -> None:
    node = Gossip("a", "0.0.0.0", keyring=RING, advertise_address="192.0.2.1")
    assert node.members()[0].address == "192.0.2.1" and node.port == 7946


@pytest.mark.parametrize("address, expected", [
    ("10.0.0.1", ("10.0.0.1", 7000)),
    ("10.0.0.1:7946", ("10.0.0.1", 7946)),
    ("[fd00::1]:8000", ("fd00::1", 8000)),
    ("fd00::1", ("fd00::1", 7000)),
    (("10.0.0.2", 1234), ("10.0.0.2", 1234)),
])
def test_peer_addresses(address, expected) -> None:
    assert parse_peer(address, 7000) == expected


@pytest.mark.parametrize("address", ["10.0.0.1:port", ":7946", ("10.0.0.1", 0)])
def test_bad_peer_addresses(address) -> None:
    with pytest.raises(ValueError, match="join address"):
        parse_peer(address, 7000)


def test_writes_before_start_are_kept_and_told() -> None:
    node = Gossip("a", "127.0.0.1", keyring=RING)
    seen = []
    node.on_entry(lambda table, key, value: seen.append((table, key, value)))
    node.put("t", "k", {"v": 1})
    node.delete("t", "k")
    assert seen == [("t", "k", {"v": 1}), ("t", "k", None)] and node.entries("t") == {}
