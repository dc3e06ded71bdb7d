"""A real container resolves service names through Docker's embedded DNS and our resolver on the gateway.

Inside one lab host (its own network namespace and dockerd): a user-defined bridge network, the resolver
listening on that bridge's gateway address in the host's namespace (a subprocess entered with nsenter), and
a busybox container run with `--dns <gateway>`. The container asks 127.0.0.11; Docker's resolver forwards
from the container's namespace to the gateway, as it will for overlay networks. Names that are not ours go
to an upstream that the subprocess also runs, on the host namespace's loopback: no query leaves the lab.
"""
from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.hosts import Host, Lab

pytestmark = pytest.mark.integration

NETWORK = "svcnet"
SUBNET, GATEWAY = "10.251.7.0/24", "10.251.7.1"
TABLE = {"web": ["10.251.7.100"], "tasks.web": ["10.251.7.21", "10.251.7.22", "10.251.7.23"], "idle": []}
OUTSIDE_ADDRESS = "192.0.2.7"  # what the upstream answers for outside.test
READY_TIMEOUT = 30.0

# Runs in the host's network namespace: the resolver on the gateway, and a dnslib upstream on loopback.
_RESOLVER = """
import asyncio, json, logging, signal, sys, threading
from pathlib import Path
from dnslib import A, QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from swarm_agent.net.dns import ServiceResolver

logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s %(message)s")
network, gateway, table, outside, ready = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]

class Upstream(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        if name != "outside.test":
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A(outside)))
        return reply

quiet = DNSLogger(log="-request,-reply,-truncated,-recv,-send,-data", prefix=False)
udp = DNSServer(Upstream(), address="127.0.0.1", port=0, logger=quiet)
port = udp.server.server_address[1]
tcp = DNSServer(Upstream(), address="127.0.0.1", port=port, tcp=True, logger=quiet)
for server in (udp, tcp):
    threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

async def main():
    resolver = ServiceResolver(lambda n, name: table.get(name) if n == network else None,
                               upstreams=[f"127.0.0.1:{port}"])
    await resolver.listen(network, gateway, 53)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    Path(ready).write_text("listening")
    await stop.wait()
    await resolver.close()
    for server in (udp, tcp):
        server.server.shutdown()
        server.server.server_close()

asyncio.run(main())
"""


def _start_resolver(host: Host, network_id: str) -> subprocess.Popen:
    ready = host.root / "dns.ready"
    proc = host.spawn([sys.executable, "-c", _RESOLVER, network_id, GATEWAY, json.dumps(TABLE), OUTSIDE_ADDRESS,
                       str(ready)], "dns")
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"resolver did not start on {GATEWAY}:\n{host.logs('dns')[-4000:]}")
        time.sleep(0.05)
    return proc


def _nslookup(host: Host, image: str, name: str) -> tuple[int, str, list[str]]:
    """(exit code, output, IPv4 addresses of the answer) of busybox nslookup in a container on the network."""
    done = host.docker("run", "--rm", "--network", NETWORK, "--dns", GATEWAY, image, "nslookup", name,
                       check=False)
    output = (done.stdout + done.stderr).decode(errors="replace")
    # The server's own line is "Address:\t127.0.0.11:53"; answers carry no port.
    answers = re.findall(r"^Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$", output, flags=re.MULTILINE)
    return done.returncode, output, sorted(answers)


def test_container_resolves_our_names_and_forwards_the_rest(lab: Lab, busybox: tuple[str, Path]) -> None:
    image, archive = busybox
    host = lab.add_host("h1")
    host.load_image(archive)
    host.docker("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY, NETWORK)
    resolver = _start_resolver(host, NETWORK)
    try:
        code, output, answers = _nslookup(host, image, "web")
        assert code == 0 and answers == TABLE["web"], output
        code, output, answers = _nslookup(host, image, "TASKS.web")
        assert code == 0 and answers == TABLE["tasks.web"], output

        code, output, answers = _nslookup(host, image, "outside.test")
        assert code == 0 and answers == [OUTSIDE_ADDRESS], output

        for missing in ("nowhere.test", "idle"):
            code, output, answers = _nslookup(host, image, missing)
            assert code != 0 and answers == [] and "NXDOMAIN" in output, output
    finally:
        host.kill(resolver, signal.SIGTERM)
    log = host.logs("dns")
    assert "Traceback" not in log, log[-4000:]
    # The queries came from the container's address on the network, as Docker's resolver forwards them.
    clients = set(re.findall(r"DNS A tasks\.web\. from (\S+) on network svcnet: NOERROR with 3 records", log,
                             flags=re.IGNORECASE))
    assert clients and all(ipaddress.ip_address(c) in ipaddress.ip_network(SUBNET) for c in clients), log[-4000:]
