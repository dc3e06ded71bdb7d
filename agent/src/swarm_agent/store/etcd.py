"""A small client for etcd's v3 JSON gateway (``/v3/kv/*``, ``/v3/watch``, ``/v3/lease/*``).

The gateway speaks protobuf-as-JSON: keys and values are base64, 64-bit
integers are strings, and fields at their zero value are left out (so an
absent ``succeeded`` means false).
"""

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class EtcdError(Exception):
    """etcd answered with an error, or no endpoint could be reached."""


class EtcdUnavailable(EtcdError):
    pass


class CompactedError(EtcdError):
    """A watch asked for a revision that etcd has already compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


def _b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: str) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> "KeyValue":
        return cls(
            key=_unb64(kv.get("key")).decode(),
            value=_unb64(kv.get("value")),
            mod_revision=int(kv.get("mod_revision", 0)),
            create_revision=int(kv.get("create_revision", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    kv: KeyValue


@dataclass(frozen=True)
class WatchBatch:
    revision: int
    events: list[WatchEvent]


# Txn building blocks: plain dicts in the gateway's shape.


def cmp_mod(key: str, revision: int) -> dict[str, Any]:
    """The key's last modification is ``revision`` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def cmp_absent(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def op_put(key: str, value: bytes | str, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def op_delete_prefix(prefix: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}}


def op_get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def op_read_guarded(guard: dict[str, Any]) -> dict[str, Any]:
    """Read the key a compare guards (revisions only), for a txn's failure branch: see ``guard_holds``."""
    return {"request_range": {"key": guard["key"], "keys_only": True}}


def guard_holds(guard: dict[str, Any], response: dict[str, Any]) -> bool:
    """Whether ``guard`` (``cmp_mod`` or ``cmp_absent``) held, judged from ``op_read_guarded``'s response in the
    same txn: a failed txn says only that some compare failed, this says which."""
    kvs = (response.get("response_range") or {}).get("kvs") or []
    field = "mod_revision" if guard["target"] == "MOD" else "create_revision"
    return (int(kvs[0].get(field, 0)) if kvs else 0) == int(guard[field])


class EtcdClient:
    """Talks to one of several etcd members, moving to the next when one fails."""

    def __init__(self, endpoints: Sequence[str], ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0):
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._ssl = ssl_context
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        # The newest store revision any answer has shown this client: a reader that must see its own writes
        # (and whatever it has already read) waits for its cache to reach this.
        self.seen_revision = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def sibling(self, endpoints: Sequence[str]) -> "EtcdClient":
        """A client of other members, with this one's credentials."""
        return EtcdClient(endpoints, self._ssl, self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._current + attempt) % len(self.endpoints)]
            try:
                async with self._http().post(
                    endpoint + path, json=body, timeout=aiohttp.ClientTimeout(total=self._timeout)
                ) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise EtcdError(f"etcd {path}: {data.get('message') or data.get('error') or resp.status}")
                    self._current = (self._current + attempt) % len(self.endpoints)
                    header = data.get("header") or {}
                    self.seen_revision = max(self.seen_revision, int(header.get("revision", 0)))
                    return data
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                log.debug("etcd endpoint %s failed on %s: %s", endpoint, path, exc)
                last = exc
        raise EtcdUnavailable(f"no etcd endpoint answered ({', '.join(self.endpoints)}): {last}")

    # ------------------------------------------------------------------ kv

    async def get(self, key: str) -> KeyValue | None:
        data = await self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str, revision: int = 0) -> tuple[list[KeyValue], int]:
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        if revision:
            body["revision"] = str(revision)
        data = await self.call("/v3/kv/range", body)
        return [KeyValue.from_json(kv) for kv in data.get("kvs") or []], int(data["header"]["revision"])

    async def revision(self) -> int:
        """The store's current revision (a linearizable read of nothing)."""
        data = await self.call("/v3/kv/range", {"key": _b64("\0"), "count_only": True})
        return int(data["header"]["revision"])

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self.call("/v3/kv/put", body)
        return int(data["header"]["revision"])

    async def delete_prefix(self, prefix: str) -> None:
        await self.call("/v3/kv/deleterange", op_delete_prefix(prefix)["request_delete_range"])

    async def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> tuple[bool, int, list[dict[str, Any]]]:
        data = await self.call(
            "/v3/kv/txn", {"compare": list(compare), "success": list(success), "failure": list(failure)}
        )
        return bool(data.get("succeeded")), int(data["header"]["revision"]), data.get("responses") or []

    # --------------------------------------------------------------- watch

    async def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Stream changes under ``prefix`` from ``start_revision`` on, until the connection ends."""
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
                "progress_notify": True,
            }
        }
        endpoint = self.endpoints[self._current]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=None)
        async with self._http().post(endpoint + "/v3/watch", json=body, timeout=timeout) as resp:
            if resp.status != 200:
                raise EtcdError(f"etcd watch on {prefix}: HTTP {resp.status}")
            # etcd's gateway ends every message with a newline (and escapes newlines inside): parse whole lines
            # only, so a message of several megabytes arriving in many chunks is decoded once.
            pending = bytearray()
            async for chunk in resp.content.iter_any():
                pending += chunk
                if b"\n" not in chunk:
                    continue
                end = pending.rfind(b"\n")
                complete = bytes(pending[:end])
                del pending[: end + 1]
                for line in complete.split(b"\n"):
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    result = message.get("result") or {}
                    if "error" in message:
                        raise EtcdError(f"etcd watch on {prefix}: {message['error']}")
                    if int(result.get("compact_revision", 0)):
                        raise CompactedError(int(result["compact_revision"]))
                    if result.get("canceled"):
                        raise EtcdError(f"etcd watch on {prefix} canceled: {result.get('cancel_reason', '')}")
                    events = [
                        WatchEvent("delete" if ev.get("type") == "DELETE" else "put", KeyValue.from_json(ev["kv"]))
                        for ev in result.get("events") or []
                    ]
                    yield WatchBatch(int(result.get("header", {}).get("revision", 0)), events)

    # -------------------------------------------------------------- leases

    async def lease_grant(self, ttl: int) -> int:
        data = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(data["ID"])

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease; returns its remaining TTL (0: it has expired)."""
        data = await self.call("/v3/lease/keepalive", {"ID": str(lease_id)})
        return int((data.get("result") or {}).get("TTL", 0))

    async def lease_revoke(self, lease_id: int) -> None:
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    # ------------------------------------------------------------- members

    async def member_list(self) -> list[dict[str, Any]]:
        data = await self.call("/v3/cluster/member/list", {})
        return data.get("members") or []

    async def _reconfigure(self, path: str, body: dict[str, Any], patience: float = 30.0) -> dict[str, Any]:
        """Membership changes wait while etcd calls the cluster unhealthy.

        etcd refuses a membership change until the last member added has been
        connected for a few seconds, so changes made back to back must wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            try:
                return await self.call(path, body)
            except EtcdError as exc:
                if "unhealthy cluster" not in str(exc) or loop.time() >= deadline:
                    raise
            await asyncio.sleep(0.5)

    async def member_add(self, peer_url: str, learner: bool = False) -> tuple[int, list[dict[str, Any]]]:
        body: dict[str, Any] = {"peerURLs": [peer_url]}
        if learner:
            body["isLearner"] = True
        data = await self._reconfigure("/v3/cluster/member/add", body)
        return int(data["member"]["ID"]), data.get("members") or []

    async def member_promote(self, member_id: int) -> None:
        """Make a learner a voting member; etcd refuses until the learner has caught up."""
        await self.call("/v3/cluster/member/promote", {"ID": str(member_id)})

    async def member_remove(self, member_id: int) -> None:
        await self._reconfigure("/v3/cluster/member/remove", {"ID": str(member_id)})
