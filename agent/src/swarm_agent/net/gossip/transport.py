"""What gossip needs of sockets: peer addresses, UDP datagrams handed to a callback, length-prefixed TCP frames."""
from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from .messages import MalformedMessage

log = logging.getLogger(__name__)

_FRAME_HEADER = struct.Struct("!I")
# A push-pull carries every member and table entry; beyond this a peer is broken or hostile.
_MAX_FRAME = 64 * 1024 * 1024


def parse_peer(address: str | tuple[str, int], default_port: int) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port" or (host, port) into (host, port)."""
    if isinstance(address, tuple):
        host, port = address
    elif address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif address.count(":") == 1:
        host, _, text = address.partition(":")
        if not text.isdigit():
            raise ValueError(f"join address {address!r}: port {text!r} is not a number")
        port = int(text)
    else:
        host, port = address, default_port
    if not host or isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"join address {address!r}: expected host, host:port or (host, port) with a port 1-65535")
    return host, port


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, node_id: str, receive: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._node_id = node_id
        self._receive = receive

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (a member gone) surface here; the probe protocol deals with them.
        log.debug("gossip node %s: UDP error %s", self._node_id, exc)


async def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(_FRAME_HEADER.pack(len(payload)) + payload)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _FRAME_HEADER.unpack(await reader.readexactly(_FRAME_HEADER.size))
    if size > _MAX_FRAME:
        raise MalformedMessage(f"push-pull frame of {size} bytes exceeds {_MAX_FRAME}")
    return await reader.readexactly(size)
