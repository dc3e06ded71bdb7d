"""The joining side: a manager whose CA does not match the token's digest gets nothing from the node.

The manager here is an impostor served on loopback over real TLS with its own CA: exactly what a
node meets when something stands between it and the swarm.
"""

from aiohttp import web
import pytest

from swarm_agent import pki, tokens
from swarm_agent.api.errors import BadRequest
from swarm_agent.manager.ca import RootCA
from swarm_agent.worker.join import request_join


async def test_a_manager_whose_ca_does_not_match_the_token_receives_no_secret() -> None:
    ours, impostor = RootCA.generate(), RootCA.generate()
    key = pki.new_key_pem()
    cert = impostor.sign_csr(pki.make_csr(key), node_id="m1", role="manager", cluster_id="c1",
                             expiry_ns=3600 * 10**9, ip_sans=["127.0.0.1"])
    received: list[tuple[str, str, bytes]] = []

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        received.append((request.method, request.path_qs, await request.read()))
        return await handler(request)

    async def ca(request: web.Request) -> web.Response:
        return web.json_response({"ca": impostor.cert_pem.decode()})

    async def join(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[record])
    app.router.add_get("/swarmd/ca", ca)
    app.router.add_post("/swarmd/join", join)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(cert, key, impostor.cert_pem))
    await site.start()
    port = runner.addresses[0][1]
    token = tokens.new_token(ours.cert_pem)
    try:
        with pytest.raises(BadRequest, match="does not match the join token"):
            await request_join(f"127.0.0.1:{port}", token, hostname="n1")
    finally:
        await runner.cleanup()
    assert [(method, path) for method, path, _ in received] == [("GET", "/swarmd/ca")]
    secret = tokens.parse_token(token).secret
    assert all(secret.encode() not in path.encode() + body for _, path, body in received)
