"""Published ports: ingress ports are one namespace for the whole cluster, auto-assigned from 30000-32767.

Pure: the caller passes the ports already taken (from the store) and writes
the result with the store's port claims, which refuse a port another service
took meanwhile.
"""

from collections.abc import Mapping, Sequence

from ..api.models import PortConfig

DYNAMIC_PORTS = range(30000, 32768)


class PortInUse(ValueError):
    pass


def allocate(
    wanted: Sequence[PortConfig],
    taken: Mapping[tuple[str, int], str],
    service_id: str,
    previous: Sequence[PortConfig] = (),
) -> list[PortConfig]:
    """The service's endpoint ports: ingress ports without a published port get one.

    On an update a port keeps the number it was given before, as in Swarm. Host-mode
    ports without a published port stay unassigned: the engine picks one where the
    task runs.
    """
    others = {key for key, owner in taken.items() if owner != service_id}
    kept = {(p.Protocol, p.TargetPort): p.PublishedPort for p in previous if p.PublishMode == "ingress"}
    out: list[PortConfig] = []
    claimed: set[tuple[str, int]] = set()
    for port in wanted:
        resolved = port.model_copy()
        if port.PublishMode == "ingress":
            if not port.PublishedPort:
                resolved.PublishedPort = kept.get((port.Protocol, port.TargetPort)) or None
                if resolved.PublishedPort is None or (port.Protocol, resolved.PublishedPort) in others | claimed:
                    resolved.PublishedPort = _free(port.Protocol, others | claimed)
            elif (port.Protocol, port.PublishedPort) in others:
                owner = taken[(port.Protocol, port.PublishedPort)]
                raise PortInUse(
                    f"port '{port.PublishedPort}/{port.Protocol}' is already in use by service {owner} as an ingress port"
                )
            claimed.add((port.Protocol, resolved.PublishedPort))  # type: ignore[arg-type]
        out.append(resolved)
    return out


def _free(protocol: str, used: set[tuple[str, int]]) -> int:
    for candidate in DYNAMIC_PORTS:
        if (protocol, candidate) not in used:
            return candidate
    raise PortInUse(f"no free {protocol} port left in {DYNAMIC_PORTS.start}-{DYNAMIC_PORTS.stop - 1}")
