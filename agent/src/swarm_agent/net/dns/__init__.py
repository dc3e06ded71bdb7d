"""Service discovery: the DNS resolver that answers containers on each overlay network.

Where it sits: each node has one Linux bridge per overlay network; its gateway address (10.0.1.1, say)
belongs to the host. Containers on that network use Docker's embedded DNS (127.0.0.11), which forwards what
it does not know to the servers of the container's HostConfig.Dns: set that to the gateway address, and call
`listen(network_id, gateway)`. Queries then arrive from container addresses on gateway:53, and the address
they arrived on tells the resolver which network asks.

The contract with the consumer (who knows services, VIPs, endpoint mode dnsrr, aliases and `tasks.NAME`):

    lookup(network_id, name) -> Sequence[str] | None
        `name` is lowercased, without the trailing dot ("web", "tasks.web", "web.1.abc").
        - IPv4 addresses as strings: the name is ours; A queries get all of them, shuffled.
        - []: the name is ours but has no healthy address now: NXDOMAIN (what clients of Docker's resolver
          see once a name's last address is gone).
        - None: not ours; the query goes to the upstream resolvers.
        It is called on the event loop for every query: answer from memory, do not block or await.
        An exception is logged and the client gets SERVFAIL.
    reverse(network_id, ipv4) -> str | None     (optional) the name for a PTR query, None to forward.

AAAA and other types for our names get NOERROR without records, never NXDOMAIN, because glibc would then
discard the A answer too. Upstreams are tried in order, two seconds each, over UDP (TCP when a reply comes
back truncated, or when the client used TCP); SERVFAIL when none answers. Malformed packets are dropped.

    resolver = ServiceResolver(table.lookup)          # upstreams: /etc/resolv.conf, loopback ones skipped
    await resolver.listen(network.id, network.gateway)
    ...
    await resolver.unlisten(network.id)               # when the network leaves the node
    await resolver.close()                            # at agent shutdown
"""
from .answers import Lookup, ReverseLookup
from .server import ServiceResolver
from .upstream import Upstream, resolv_conf_upstreams

__all__ = ["Lookup", "ReverseLookup", "ServiceResolver", "Upstream", "resolv_conf_upstreams"]
