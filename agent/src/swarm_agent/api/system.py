"""``/_ping``, ``/version`` and ``/info``: what the docker CLI asks before anything else."""

import platform

from aiohttp import web

from .. import __version__
from .app import API_VERSION, MIN_API_VERSION, Route, agent_of, json_response


def _ping_headers(request: web.Request) -> dict[str, str]:
    return {
        "Api-Version": API_VERSION,
        "Docker-Experimental": "false",
        "Ostype": "linux",
        "Swarm": agent_of(request).swarm_header(),
        "Cache-Control": "no-cache, no-store, must-revalidate",
    }


async def ping(request: web.Request) -> web.Response:
    body = "" if request.method == "HEAD" else "OK"
    return web.Response(text=body, headers=_ping_headers(request), content_type="text/plain")


async def version(request: web.Request) -> web.Response:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return json_response(
        {
            "Platform": {"Name": "swarm"},
            "Components": [{"Name": "swarmd", "Version": __version__, "Details": {"ApiVersion": API_VERSION}}],
            "Version": __version__,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": platform.release(),
            "GitCommit": "",
            "GoVersion": "",
        }
    )


async def info(request: web.Request) -> web.Response:
    agent = agent_of(request)
    return json_response(await agent.info())


ROUTES = [
    Route("GET", "/_ping", ping, "manager"),
    Route("HEAD", "/_ping", ping, "manager"),
    Route("GET", "/version", version, "manager"),
    Route("GET", "/info", info, "manager"),
]
