"""Answers to DNS queries from the consumer's name table, built with dnslib: no sockets here.

`local_answer` decides between answering (our name) and forwarding (None); `pack_for` fits a reply into the
size the client can take over UDP, trimming records and setting TC so that the client retries over TCP.
"""
from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Sequence

from dnslib import A, DNSError, DNSRecord, EDNS0, PTR, QTYPE, RCODE, RR

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], Sequence[str] | None]
ReverseLookup = Callable[[str, str], str | None]

# RFC 1035: a UDP reply without EDNS0 holds at most 512 bytes.
CLASSIC_UDP_SIZE = 512
# What we accept from clients' EDNS0 and advertise back: large enough for ~250 A records, small enough
# to avoid IP fragmentation trouble on most paths (the 2020 DNS flag day suggested 1232; we are on-host).
MAX_UDP_SIZE = 4096
TCP_MAX_SIZE = 65535
_REVERSE_V4 = "in-addr.arpa"
_OPCODE_QUERY = 0
_CLASS_IN = 1


def normalised_name(record: DNSRecord) -> str:
    """The question's name as the lookup wants it: lowercased, no trailing dot."""
    return str(record.q.qname).lower().rstrip(".")


def parse_query(data: bytes) -> DNSRecord | None:
    """A query worth answering, or None (logged at debug) for what must be dropped: garbage, replies, no question."""
    try:
        record = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        # dnslib raises DNSError for most damage, but some truncated labels surface as the builtin errors.
        log.debug("dropped a malformed DNS packet of %d bytes: %s", len(data), exc)
        return None
    if record.header.qr:
        log.debug("dropped a DNS reply (id %d) sent to the resolver as if it were a query", record.header.id)
        return None
    if not record.questions:
        log.debug("dropped a DNS query (id %d) without a question", record.header.id)
        return None
    return record


def udp_limit(query: DNSRecord) -> int:
    """How large a UDP reply the client accepts: its EDNS0 size within [512, MAX_UDP_SIZE], else 512."""
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(CLASSIC_UDP_SIZE, min(int(rr.rclass), MAX_UDP_SIZE))
    return CLASSIC_UDP_SIZE


def _reply(query: DNSRecord, rcode: int = RCODE.NOERROR) -> DNSRecord:
    reply = query.reply(ra=1, aa=1)
    reply.header.rcode = rcode
    if any(rr.rtype == QTYPE.OPT for rr in query.ar):
        reply.add_ar(EDNS0(udp_len=MAX_UDP_SIZE))
    return reply


def error_reply(query: DNSRecord, rcode: int) -> DNSRecord:
    """A reply with only the question and the given RCODE (SERVFAIL, NOTIMP, ...), not authoritative."""
    reply = _reply(query, rcode)
    reply.header.aa = 0
    return reply


def _address_from_reverse(name: str) -> str | None:
    """"4.3.2.1.in-addr.arpa" -> "1.2.3.4"; None for anything that is not a full IPv4 reverse name."""
    if not name.endswith("." + _REVERSE_V4):
        return None
    octets = name[: -len(_REVERSE_V4) - 1].split(".")
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(octets))))
    except ValueError:
        return None


def local_answer(query: DNSRecord, network_id: str, lookup: Lookup, reverse: ReverseLookup | None = None,
                 ttl: int = 0) -> DNSRecord | None:
    """Our reply to `query` on `network_id`, or None when the name is not ours and must be forwarded.

    - A (and ANY) for a name with addresses: every address, shuffled so that clients spread over them.
    - AAAA or any other type for such a name: NOERROR without records. NXDOMAIN would tell the client the
      name does not exist at all, and glibc would then drop the A answer it got for the same name.
    - A name the lookup owns but that has no address now ([]): NXDOMAIN for every type. Docker's resolver
      deletes a name with its last address and lets the query go upstream, which answers NXDOMAIN; we give
      the same answer without sending our internal names to the host's resolvers.
    - PTR for an address `reverse` knows (when given); other reverse names are forwarded.
    - Non-QUERY opcodes and classes other than IN get NOTIMP and are never forwarded.
    """
    question = query.q
    if query.header.opcode != _OPCODE_QUERY:
        return error_reply(query, RCODE.NOTIMP)
    if question.qclass != _CLASS_IN:
        return None
    name = normalised_name(query)
    if question.qtype == QTYPE.PTR:
        return _ptr_answer(query, network_id, name, reverse, ttl)
    addresses = lookup(network_id, name)
    if addresses is None:
        return None
    if not addresses:
        return _reply(query, RCODE.NXDOMAIN)
    reply = _reply(query)
    if question.qtype in (QTYPE.A, QTYPE.ANY):
        shuffled = list(addresses)
        random.shuffle(shuffled)
        # A(...) raises ValueError for anything but a dotted IPv4 address: the consumer's bug, reported by the server.
        reply.add_answer(*(RR(question.qname, QTYPE.A, ttl=ttl, rdata=A(address)) for address in shuffled))
    return reply


def _ptr_answer(query: DNSRecord, network_id: str, name: str, reverse: ReverseLookup | None,
                ttl: int) -> DNSRecord | None:
    address = _address_from_reverse(name)
    if reverse is None or address is None:
        return None
    target = reverse(network_id, address)
    if target is None:
        return None
    reply = _reply(query)
    reply.add_answer(RR(query.q.qname, QTYPE.PTR, ttl=ttl, rdata=PTR(target.rstrip(".") + ".")))
    return reply


def pack_for(reply: DNSRecord, limit: int) -> bytes:
    """Wire bytes of `reply` within `limit` bytes: as many answers as fit, with TC set when some were cut."""
    data = reply.pack()
    if len(data) <= limit:
        return data
    answers = list(reply.rr)

    def packed(count: int) -> bytes:
        reply.rr = answers[:count]
        reply.header.tc = 1
        return reply.pack()

    # The largest count that fits; records of one reply are of similar size, so a bisection is enough.
    low, high = 0, len(answers)
    while low < high:
        middle = (low + high + 1) // 2
        if len(packed(middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    return packed(low)
