"""Joining a swarm from the node's side: trust the manager's CA only if the token vouches for it, then get a certificate."""

import asyncio
from typing import Any

import aiohttp

from .. import pki, tokens
from ..api.errors import ApiError, BadRequest


async def request_join(
    addr: str, token: str, *, hostname: str, advertise_addr: str = "", availability: str = "active"
) -> tuple[dict[str, Any], bytes]:
    """Join through the manager at ``addr``: (the manager's answer, the node's new private key).

    The CA is fetched without trusting anything and compared with the digest in
    the token before the token's secret or anything else is sent; the CSR then
    goes over TLS verified against that CA. An empty ``advertise_addr`` leaves
    the choice to the manager (the address the request comes from).
    """
    try:
        digest = tokens.parse_token(token).digest
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context(None))) as http:
        async with http.get(f"https://{addr}/swarmd/ca", timeout=timeout) as resp:
            ca_pem = (await resp.json(content_type=None))["ca"].encode()
    if tokens.ca_digest(ca_pem) != digest:
        raise BadRequest(
            f"the manager at {addr} presented a root CA that does not match the join token; "
            "refusing to send anything to it"
        )
    key = pki.new_key_pem()
    csr = (await asyncio.to_thread(pki.make_csr, key)).decode()
    body = {
        "token": token,
        "csr": csr,
        "hostname": hostname,
        "advertise_addr": advertise_addr,
        "availability": availability,
    }
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context(ca_pem))) as http:
        async with http.post(f"https://{addr}/swarmd/join", json=body, timeout=timeout) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise ApiError(data.get("message", f"join refused with HTTP {resp.status}"), status=resp.status)
    return data, key
