"""Service resolver throughput and latency on loopback: our names, and names forwarded to an upstream.

The resolver runs in this process; the load generator is a separate process (its own interpreter, so it does
not share our GIL) sending UDP queries with a window of `--window` in flight. The upstream for forwarded names
is dnslib's threaded server in a third process. Run from the repository root:
    .venv/bin/python bench/dns_resolver.py [--queries 20000] [--window 32]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys

from swarm_agent.net.dns import ServiceResolver

RESOLVER_ADDRESS, UPSTREAM_ADDRESS = "127.0.55.1", "127.0.55.2"
TASKS = [f"10.0.9.{i}" for i in range(1, 11)]

_CLIENT = r"""
import json, socket, sys, time
from dnslib import DNSRecord
address, port, name, count, window = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((address, port))
sock.settimeout(5)
template = DNSRecord.question(name)
queries = []
for i in range(count):
    template.header.id = i % 65536  # unique within any window
    queries.append((template.header.id, template.pack()))
sent, latencies, started = {}, [], time.perf_counter()
for i in range(0, count, window):
    for query_id, packed in queries[i:i + window]:
        sent[query_id] = time.perf_counter()
        sock.send(packed)
    for _ in queries[i:i + window]:
        data = sock.recv(4096)
        received = time.perf_counter()
        # The id is the first 16 bits; parsing every reply with dnslib would make this client the bottleneck.
        query_id = int.from_bytes(data[:2], "big")
        if query_id % 100 == 0:
            assert DNSRecord.parse(data).rr, data
        latencies.append(received - sent.pop(query_id))
print(json.dumps({"seconds": time.perf_counter() - started, "latencies": latencies}))
"""

_UPSTREAM = r"""
import sys
from dnslib import A, QTYPE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer
class Fixed(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.7")))
        return reply
server = DNSServer(Fixed(), address=sys.argv[1], port=0, logger=DNSLogger(log="-request,-reply,-recv,-send,-data,-truncated", prefix=False))
print(server.server.server_address[1], flush=True)
server.server.serve_forever(poll_interval=0.05)
"""


def _report(what: str, result: dict, count: int) -> None:
    latencies = sorted(result["latencies"])
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"{what}: {count} queries in {result['seconds']:.2f} s = {count / result['seconds']:.0f} queries/s; "
          f"latency median {statistics.median(latencies) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")


async def _load(port: int, name: str, count: int, window: int) -> dict:
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, RESOLVER_ADDRESS, str(port), name, str(count), str(window),
        stdout=subprocess.PIPE)
    out, _ = await client.communicate()
    if client.returncode != 0:
        raise SystemExit(f"load generator failed for {name}")
    return json.loads(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--window", type=int, default=32)
    args = parser.parse_args()
    upstream = subprocess.Popen([sys.executable, "-c", _UPSTREAM, UPSTREAM_ADDRESS], stdout=subprocess.PIPE, text=True)
    resolver = None
    try:
        upstream_port = int(upstream.stdout.readline())
        table = {"web": TASKS[:1], "tasks.web": TASKS}
        resolver = ServiceResolver(lambda _n, name: table.get(name), upstreams=[f"{UPSTREAM_ADDRESS}:{upstream_port}"])
        _, port = await resolver.listen("bench", RESOLVER_ADDRESS, 0)
        _report("our name, 10 addresses (tasks.web)",
                await _load(port, "tasks.web", args.queries, args.window), args.queries)
        forwarded = max(args.queries // 4, 1)
        _report("forwarded to the upstream", await _load(port, "outside.test", forwarded, args.window), forwarded)
    finally:
        if resolver is not None:
            await resolver.close()
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    asyncio.run(main())
