"""A node's certificate renewals: when (a random point of the certificate's renewal window, at once when the
swarm's root changes, again with a growing delay after a failure) and how (a CSR for a new key to the
managers' ``/swarmd/renew``). Real agents and hollow nodes renew through the same code."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp

from .. import pki

log = logging.getLogger(__name__)

RETRY_MIN, RETRY_MAX = 5.0, 300.0  # seconds between failed renewals, doubling


async def request_certificate(certs: pki.NodeCerts, managers: Iterable[str],
                              role: str) -> tuple[dict[str, Any], bytes] | None:
    """A new key and a certificate for it in ``role`` from the first manager that grants one; None if none did.

    The request goes out with the node's current certificate, which names the node to the managers.
    """
    node_id = certs.identity.node_id
    key = pki.new_key_pem()
    csr = (await asyncio.to_thread(pki.make_csr, key)).decode()
    context = pki.client_context(certs.ca_pem, certs.cert_pem, certs.key_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        for addr in managers:
            try:
                async with http.post(f"https://{addr}/swarmd/renew", json={"csr": csr, "role": role},
                                     timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    if resp.status == 200:
                        return await resp.json(content_type=None), key
                    log.warning("node %s: manager %s refused a %s certificate: %s",
                                node_id, addr, role, await resp.text())
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("node %s: could not reach manager %s for a new certificate: %s",
                            node_id, addr, exc or type(exc).__name__)
    return None


def authority_changed(certs: pki.NodeCerts, trust_pem: bytes, issuer_pem: bytes) -> bool:
    """The managers trust other roots, or sign with another key, than this node's certificates show: a root
    rotation started or ended, and the node must renew now to keep up."""
    return certs.ca_pem != trust_pem or not pki.issued_by(certs.cert_pem, issuer_pem)


class Renewal:
    """One node's renewal schedule: ``renew`` (True once a new certificate is in use) runs when the current
    certificate's window says, at once after ``wake``, and again after RETRY_MIN, doubling, while it fails."""

    def __init__(self, identity: Callable[[], pki.Identity], renew: Callable[[], Awaitable[bool]],
                 window: tuple[float, float] = pki.RENEW_WINDOW) -> None:
        self._identity = identity
        self._renew = renew
        self._window = window
        self._now = asyncio.Event()

    def wake(self) -> None:
        self._now.set()

    @property
    def woken(self) -> bool:
        return self._now.is_set()

    async def run(self) -> None:
        retry = 0.0
        while True:
            identity = self._identity()
            delay = retry or pki.renewal_delay(identity, self._window)
            log.info("node %s: certificate serial %x valid until %s; renewing in %.0f s",
                     identity.node_id, identity.serial, identity.not_after.isoformat(), delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._now.wait(), delay)
            self._now.clear()
            if await self._renew():
                retry = 0.0
            else:
                retry = min(RETRY_MAX, max(RETRY_MIN, 2 * retry))
                log.warning("node %s: certificate renewal failed; trying again in %.0f s", identity.node_id, retry)
