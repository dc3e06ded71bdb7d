# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one client of a swarm manager's API, shared by every module of the collection.

Modules run on the managed host, where only Ansible's module utilities and the
standard library can be counted on: requests go through ``open_url`` over the
manager's unix socket. The API is Docker Engine API 1.41; its error bodies
(``{"message": ...}``) become the module's failure message unchanged, because
the manager's validation errors already name the offending field.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Callable
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.urls import open_url

API_VERSION = "v1.41"
DEFAULT_SOCKET = "/run/swarm/swarm.sock"

# Kept in step with plugins/doc_fragments/api.py, which documents these options.
API_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "api_socket": {"type": "str", "default": DEFAULT_SOCKET, "aliases": ["docker_host"]},
    "timeout": {"type": "int", "default": 60},
}

# Kept in step with plugins/doc_fragments/wait.py.
WAIT_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "wait": {"type": "bool", "default": False},
    "wait_timeout": {"type": "int", "default": 120},
}


def argument_spec(*parts: dict[str, dict[str, Any]], **options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A module's argument_spec: its own options plus the shared ones (copied: AnsibleModule mutates them)."""
    spec: dict[str, dict[str, Any]] = {}
    for part in (API_ARGUMENT_SPEC,) + parts:
        spec.update({name: dict(value) for name, value in part.items()})
    spec.update(options)
    return spec


class ApiError(Exception):
    """An answer of the API that is not a success: the HTTP status and Docker's message."""

    def __init__(self, status: int, message: str, path: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path


def socket_path(value: str) -> str:
    """``/path`` or ``unix:///path`` (Docker's DOCKER_HOST form) to a socket path."""
    if value.startswith("unix://"):
        return value[len("unix://"):]
    if "://" in value:
        raise ValueError(
            "api_socket must be the path of the manager's unix socket (or unix://PATH), got %r" % value
        )
    return value


def filters_query(filters: dict[str, Any]) -> str:
    """Docker's ``filters`` query parameter: a JSON object of lists of strings."""
    out: dict[str, list[str]] = {}
    for key, value in filters.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        out[key] = [str(v) for v in values]
    return json.dumps(out, sort_keys=True)


def error_message(status: int, raw: bytes) -> str:
    """Docker's ``{"message": ...}``, or the raw body when a proxy or a crash answered instead."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return text or "the API answered HTTP %d with no message" % status


class SwarmApi:
    """Requests to one manager; ``call`` raises ``ApiError``, the other methods fail the module on errors."""

    def __init__(self, module: Any) -> None:
        self.module = module
        try:
            self.socket = socket_path(module.params["api_socket"])
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        self.timeout = module.params["timeout"]

    def call(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        url = "http://localhost/%s%s" % (API_VERSION, quote(path))
        if query:
            url += "?" + urlencode(query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            response = open_url(
                url, data=data, headers=headers, method=method, timeout=self.timeout,
                unix_socket=self.socket, use_proxy=False,
            )
            raw = response.read()
        except HTTPError as exc:
            raise ApiError(exc.code, error_message(exc.code, exc.read() or b""), path) from None
        except (URLError, OSError, socket.timeout) as exc:
            reason = getattr(exc, "reason", exc)
            self.module.fail_json(
                msg="cannot reach the swarm manager API at %s: %s" % (self.socket, reason), api_path=path
            )
        if not raw.strip():
            return None
        return json.loads(raw.decode("utf-8"))

    def _or_fail(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        try:
            return self.call(method, path, query, body)
        except ApiError as exc:
            self.module.fail_json(msg=exc.message, status=exc.status, api_path=exc.path)

    def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self._or_fail("GET", path, query)

    def find(self, path: str) -> Any:
        """The object at ``path``, or None when the API says it does not exist."""
        try:
            return self.call("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            self.module.fail_json(msg=exc.message, status=exc.status, api_path=exc.path)

    def post(self, path: str, body: Any, query: dict[str, Any] | None = None) -> Any:
        return self._or_fail("POST", path, query, body)

    def delete(self, path: str, query: dict[str, Any] | None = None) -> None:
        self._or_fail("DELETE", path, query)

    def list_objects(self, path: str, filters: dict[str, Any] | None = None, **query: Any) -> list[Any]:
        params = dict(query)
        if filters:
            params["filters"] = filters_query(filters)
        return self.get(path, params) or []

    def named(self, path: str, name: str, name_of: Callable[[dict[str, Any]], str]) -> dict[str, Any] | None:
        """The object of the list at ``path`` named exactly ``name``.

        A lookup by reference could also match another object's ID prefix, and the ``name`` filter matches
        substrings: only an exact name counts.
        """
        for found in self.list_objects(path, {"name": [name]}):
            if name_of(found) == name:
                return found
        return None

    def service_named(self, name: str) -> dict[str, Any] | None:
        return self.named("/services", name, lambda service: service["Spec"]["Name"])

    def network_named(self, name: str) -> dict[str, Any] | None:
        return self.named("/networks", name, lambda network: network["Name"])

    def file_object_named(self, kind: str, name: str) -> dict[str, Any] | None:
        """The secret or config (``kind``) named exactly ``name``."""
        return self.named("/%ss" % kind, name, lambda obj: obj["Spec"]["Name"])


def poll(check: Callable[[], tuple[bool, str]], timeout: float, interval: float = 0.5) -> tuple[bool, str]:
    """Call ``check`` until it reports done or ``timeout`` seconds pass; return its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        done, why = check()
        if done or time.monotonic() >= deadline:
            return done, why
        time.sleep(interval)
