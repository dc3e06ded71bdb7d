"""Gossip messages and their wire form: compact JSON, one object per message with its kind in "t".

A UDP datagram carries a JSON array of messages (a probe or ack first, then piggybacked updates); a TCP
stream carries one push-pull message per direction, each prefixed with its length. Both are encrypted by the
keyring around this encoding. Decoding checks every field, so a peer's bad message is refused with the field
named instead of failing later in the protocol.
"""
from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, Union

MemberStateName = Literal["alive", "suspect", "dead", "left"]
MEMBER_STATES: tuple[MemberStateName, ...] = ("alive", "suspect", "dead", "left")


class MalformedMessage(ValueError):
    """A message that decrypted fine but is not a valid gossip message."""


@dataclass(frozen=True)
class Ping:
    """Are you alive? `target` is the node ID the sender means, so a reused address does not answer."""
    KIND: ClassVar[str] = "ping"
    seq: int
    target: str
    source: str


@dataclass(frozen=True)
class Ack:
    KIND: ClassVar[str] = "ack"
    seq: int
    source: str


@dataclass(frozen=True)
class PingReq:
    """Probe `target` for me and forward its ack; send a nack after `wait` seconds without one, which tells
    the requester that its own network path works (Lifeguard)."""
    KIND: ClassVar[str] = "ping-req"
    seq: int
    target: str
    address: str
    port: int
    source: str
    nack: bool
    wait: float


@dataclass(frozen=True)
class Nack:
    KIND: ClassVar[str] = "nack"
    seq: int
    source: str


@dataclass(frozen=True)
class Alive:
    KIND: ClassVar[str] = "alive"
    node: str
    address: str
    port: int
    incarnation: int


@dataclass(frozen=True)
class Suspect:
    KIND: ClassVar[str] = "suspect"
    node: str
    incarnation: int
    source: str


@dataclass(frozen=True)
class Dead:
    """`node` is dead; when `source` is `node` itself, it left on purpose."""
    KIND: ClassVar[str] = "dead"
    node: str
    incarnation: int
    source: str


@dataclass(frozen=True)
class EntryUpdate:
    """One table entry as its owner last wrote it; `value` None is a tombstone."""
    KIND: ClassVar[str] = "entry"
    table: str
    key: str
    owner: str
    ltime: int
    value: dict[str, Any] | None


@dataclass(frozen=True)
class MemberRecord:
    """A member as one node sees it, in a push-pull."""
    node: str
    address: str
    port: int
    state: MemberStateName
    incarnation: int


@dataclass(frozen=True)
class PushPull:
    """A node's whole state: members (dead ones included, so news of a death spreads) and every table entry
    (tombstones included). `join` asks the receiver to answer even when it is busy merging."""
    KIND: ClassVar[str] = "push-pull"
    source: str
    join: bool
    ltime: int
    members: tuple[MemberRecord, ...]
    entries: tuple[EntryUpdate, ...]


Message = Union[Ping, Ack, PingReq, Nack, Alive, Suspect, Dead, EntryUpdate, PushPull]
_KINDS: dict[str, type] = {cls.KIND: cls for cls in (Ping, Ack, PingReq, Nack, Alive, Suspect, Dead, EntryUpdate,
                                                        PushPull)}


# Fields holding lists of nested records, by their declared type.
_NESTED: dict[str, type] = {"tuple[MemberRecord, ...]": MemberRecord, "tuple[EntryUpdate, ...]": EntryUpdate}


def _plain(value: Any) -> Any:
    if isinstance(value, (MemberRecord, EntryUpdate)):
        return _fields_of(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _fields_of(message: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(message, f.name)) for f in fields(message)}


def encode(message: Message) -> bytes:
    return json.dumps({"t": message.KIND, **_fields_of(message)}, separators=(",", ":"),
                      allow_nan=False).encode()


def encode_packet(encoded: list[bytes]) -> bytes:
    """Joins encoded messages into one datagram payload; its size is 2 + sum(sizes) + commas."""
    return b"[" + b",".join(encoded) + b"]"


def packet_size(sizes: int, count: int) -> int:
    return 2 + sizes + max(0, count - 1)


def _check_int(name: str, value: Any, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise MalformedMessage(f"field {name!r}: expected an integer {bound}, got {value!r}")
    return value


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise MalformedMessage(f"field {name!r}: expected a non-empty string, got {value!r}")
    return value


def _check_value(name: str, annotation: Any, raw: Any) -> Any:
    """Checks one field against its declared type (the annotations are strings, see the future import)."""
    if annotation == "int":
        return _check_int(name, raw, high=65535 if name == "port" else None)
    if annotation == "str":
        _check_str(name, raw)
        if name == "address":
            try:
                ipaddress.ip_address(raw)
            except ValueError:
                raise MalformedMessage(f"field 'address': expected an IP address, got {raw!r}") from None
        return raw
    if annotation == "bool":
        if not isinstance(raw, bool):
            raise MalformedMessage(f"field {name!r}: expected true or false, got {raw!r}")
        return raw
    if annotation == "float":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
            raise MalformedMessage(f"field {name!r}: expected a non-negative number, got {raw!r}")
        return float(raw)
    if annotation == "MemberStateName":
        if raw not in MEMBER_STATES:
            raise MalformedMessage(f"field {name!r}: expected one of {', '.join(MEMBER_STATES)}, got {raw!r}")
        return raw
    if annotation == "dict[str, Any] | None":
        if raw is not None and not isinstance(raw, dict):
            raise MalformedMessage(f"field {name!r}: expected an object or null, got {type(raw).__name__}")
        return raw
    raise AssertionError(f"no check for field {name!r} of type {annotation!r}")


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise MalformedMessage(f"{where}: expected an object, got {type(raw).__name__}")
    values = {}
    for f in fields(cls):
        if f.name not in raw:
            raise MalformedMessage(f"{where}: field {f.name!r} is missing")
        item_class = _NESTED.get(f.type)
        if item_class is not None:
            items = raw[f.name]
            if not isinstance(items, list):
                raise MalformedMessage(f"{where}: field {f.name!r}: expected a list, got {type(items).__name__}")
            values[f.name] = tuple(_build(item_class, item, f"{where}.{f.name}[{i}]") for i, item in enumerate(items))
            continue
        try:
            values[f.name] = _check_value(f.name, f.type, raw[f.name])
        except MalformedMessage as exc:
            raise MalformedMessage(f"{where}: {exc}") from None
    return cls(**values)


def decode_message(raw: Any) -> Message:
    """Builds one message from its decoded JSON object."""
    if not isinstance(raw, dict):
        raise MalformedMessage(f"message: expected an object, got {type(raw).__name__}")
    kind = raw.get("t")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MalformedMessage(f"message: unknown kind {kind!r}")
    return _build(cls, raw, f"{kind} message")


def decode(data: bytes) -> Message:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"message is not JSON: {exc}") from None
    return decode_message(raw)


def decode_packet(data: bytes) -> tuple[list[Message], list[str]]:
    """Decodes a datagram: the valid messages, and one error per invalid one (which the others survive)."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        return [], [f"datagram is not JSON: {exc}"]
    if not isinstance(raw, list):
        return [], [f"datagram: expected a list of messages, got {type(raw).__name__}"]
    messages: list[Message] = []
    errors: list[str] = []
    for item in raw:
        try:
            messages.append(decode_message(item))
        except MalformedMessage as exc:
            errors.append(str(exc))
    return messages, errors

