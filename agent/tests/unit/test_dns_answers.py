"""The resolver's answers from a name table, packed to wire bytes and parsed back; upstream settings."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from swarm_agent.net.dns.answers import (
    CLASSIC_UDP_SIZE,
    MAX_UDP_SIZE,
    TCP_MAX_SIZE,
    local_answer,
    pack_for,
    parse_query,
    udp_limit,
)
from swarm_agent.net.dns.upstream import Upstream, resolv_conf_options, resolv_conf_upstreams

TABLE = {
    ("net-a", "web"): ["10.0.1.10"],
    ("net-a", "tasks.web"): ["10.0.1.21", "10.0.1.22", "10.0.1.23"],
    ("net-a", "idle"): [],
    ("net-b", "web"): ["10.0.2.10"],
}
NAMES = {("net-a", "10.0.1.21"): "web.1.taskid"}


def lookup(network_id: str, name: str) -> Sequence[str] | None:
    return TABLE.get((network_id, name))


def reverse(network_id: str, address: str) -> str | None:
    return NAMES.get((network_id, address))


def roundtrip(name: str, qtype: str = "A", network: str = "net-a", **kwargs: object) -> DNSRecord | None:
    """Query bytes in, reply bytes out, parsed back: what a client would see."""
    query = parse_query(DNSRecord.question(name, qtype).pack())
    assert query is not None
    reply = local_answer(query, network, lookup, reverse, **kwargs)  # type: ignore[arg-type]
    return None if reply is None else DNSRecord.parse(pack_for(reply, udp_limit(query)))


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def test_a_query_answers_every_address_of_the_network_asking() -> None:
    reply = roundtrip("tasks.web")
    assert reply is not None and reply.header.rcode == RCODE.NOERROR
    assert sorted(addresses(reply)) == ["10.0.1.21", "10.0.1.22", "10.0.1.23"]
    assert reply.header.qr == 1 and reply.header.aa == 1 and reply.header.ra == 1
    assert all(rr.ttl == 0 for rr in reply.rr)
    assert addresses(roundtrip("web", network="net-b")) == ["10.0.2.10"]  # type: ignore[arg-type]


def test_names_are_case_insensitive_and_the_answer_keeps_the_asked_case() -> None:
    reply = roundtrip("Tasks.WEB.")
    assert reply is not None and sorted(addresses(reply)) == ["10.0.1.21", "10.0.1.22", "10.0.1.23"]
    assert str(reply.q.qname) == "Tasks.WEB." and {str(rr.rname) for rr in reply.rr} == {"Tasks.WEB."}


def test_addresses_are_shuffled_so_clients_spread() -> None:
    orders = {tuple(addresses(roundtrip("tasks.web"))) for _ in range(200)}  # type: ignore[arg-type]
    # Six orders of three addresses; 200 draws all give the same one with probability 6 * (1/6)**200.
    assert len(orders) > 1


def test_ttl_is_the_configured_one() -> None:
    reply = roundtrip("web", ttl=5)
    assert reply is not None and [rr.ttl for rr in reply.rr] == [5]


@pytest.mark.parametrize("qtype", ["AAAA", "MX", "TXT", "SRV"])
def test_other_types_of_our_names_are_noerror_without_records(qtype: str) -> None:
    reply = roundtrip("web", qtype)
    assert reply is not None and reply.header.rcode == RCODE.NOERROR and reply.rr == []


@pytest.mark.parametrize("qtype", ["A", "AAAA"])
def test_our_name_without_addresses_is_nxdomain(qtype: str) -> None:
    reply = roundtrip("idle", qtype)
    assert reply is not None and reply.header.rcode == RCODE.NXDOMAIN and reply.rr == []


def test_names_not_ours_are_left_to_forwarding() -> None:
    assert roundtrip("example.org") is None
    assert roundtrip("tasks.web", network="net-b") is None


def test_ptr_for_a_known_address_and_forwarding_for_others() -> None:
    reply = roundtrip("21.1.0.10.in-addr.arpa", "PTR")
    assert reply is not None and [str(rr.rdata) for rr in reply.rr] == ["web.1.taskid."]
    assert roundtrip("99.1.0.10.in-addr.arpa", "PTR") is None
    assert roundtrip("1.0.10.in-addr.arpa", "PTR") is None  # not a full address


def test_other_opcodes_get_notimp() -> None:
    query = DNSRecord.question("web")
    query.header.opcode = 2  # STATUS
    reply = local_answer(parse_query(query.pack()), "net-a", lookup)  # type: ignore[arg-type]
    assert reply is not None and reply.header.rcode == RCODE.NOTIMP


def test_a_failing_address_from_the_lookup_raises_for_the_server_to_report() -> None:
    query = parse_query(DNSRecord.question("web").pack())
    with pytest.raises(ValueError):
        local_answer(query, "n", lambda _n, _name: ["not-an-address"])  # type: ignore[arg-type]


def test_udp_reply_too_large_is_cut_to_fit_with_tc_and_tcp_gets_everything() -> None:
    many = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(300)]
    query = parse_query(DNSRecord.question("big").pack())
    reply = local_answer(query, "n", lambda _n, _name: many)  # type: ignore[arg-type]
    assert reply is not None
    udp = pack_for(reply, udp_limit(query))  # type: ignore[arg-type]
    assert len(udp) <= CLASSIC_UDP_SIZE
    cut = DNSRecord.parse(udp)
    assert cut.header.tc == 1 and 0 < len(cut.rr) < 300
    # One more record would not have fit: 16 bytes per compressed A record.
    assert len(udp) + 16 > CLASSIC_UDP_SIZE
    whole = DNSRecord.parse(pack_for(local_answer(query, "n", lambda _n, _name: many), TCP_MAX_SIZE))  # type: ignore[arg-type]
    assert whole.header.tc == 0 and sorted(addresses(whole)) == sorted(many)


def test_edns_size_of_the_client_is_honoured_and_advertised_back() -> None:
    query = DNSRecord.question("web")
    query.add_ar(EDNS0(udp_len=1232))
    parsed = parse_query(query.pack())
    assert parsed is not None and udp_limit(parsed) == 1232
    reply = DNSRecord.parse(pack_for(local_answer(parsed, "net-a", lookup), 1232))  # type: ignore[arg-type]
    assert [rr.rtype for rr in reply.ar] == [QTYPE.OPT] and reply.ar[0].rclass == MAX_UDP_SIZE
    query.ar[0].rclass = 100  # below the classic size: the classic size still holds
    assert udp_limit(parse_query(query.pack())) == CLASSIC_UDP_SIZE  # type: ignore[arg-type]
    assert udp_limit(parse_query(DNSRecord.question("web").pack())) == CLASSIC_UDP_SIZE  # type: ignore[arg-type]


def test_replies_and_questionless_packets_are_not_queries() -> None:
    assert parse_query(DNSRecord.question("web").reply().pack()) is None
    assert parse_query(DNSRecord().pack()) is None
    assert parse_query(b"") is None
    assert parse_query(b"\x12\x34\x01") is None


@given(st.binary(max_size=600))
def test_garbage_never_raises(data: bytes) -> None:
    query = parse_query(data)
    if query is not None:
        reply = local_answer(query, "net-a", lookup, reverse)
        if reply is not None:
            pack_for(reply, CLASSIC_UDP_SIZE)


@given(st.binary(min_size=12, max_size=80))
def test_damaged_real_queries_never_raise(tail: bytes) -> None:
    data = DNSRecord.question("tasks.web").pack()
    parse_query(data[:12] + tail)
    parse_query(data[: len(tail) % len(data)])


@pytest.mark.parametrize(("text", "host", "port"), [
    ("10.0.0.2", "10.0.0.2", 53), ("10.0.0.2:5353", "10.0.0.2", 5353), ("fd00::1", "fd00::1", 53),
    ("[fd00::1]:5353", "fd00::1", 5353), (" 127.0.0.1 ", "127.0.0.1", 53),
])
def test_upstream_addresses(text: str, host: str, port: int) -> None:
    assert Upstream.parse(text) == Upstream(host, port)


@pytest.mark.parametrize(("text", "message"), [
    ("dns.example", "'dns.example' is not an IP address"),
    ("10.0.0.2:0", "port '0' is not a number from 1 to 65535"),
    ("10.0.0.2:x", "port 'x'"),
    ("[fd00::1]x", "expected [address]:port"),
])
def test_bad_upstreams_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Upstream.parse(text)
    assert str(raised.value).startswith(f"upstream {text!r}") and message in str(raised.value)


def test_resolv_conf_upstreams_skip_loopback_and_junk(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.org\nnameserver 127.0.0.53\nnameserver 10.255.255.53\n"
                    "nameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\n")
    assert resolv_conf_upstreams(conf) == [Upstream("10.255.255.53"), Upstream("fe80::1")]
    assert resolv_conf_upstreams(tmp_path / "missing") == []


def test_resolv_conf_options_in_order(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.11\noptions ndots:0\n# options debug\noptions edns0 rotate\n")
    assert resolv_conf_options(conf) == ["ndots:0", "edns0", "rotate"]
    assert resolv_conf_options(tmp_path / "missing") == []
