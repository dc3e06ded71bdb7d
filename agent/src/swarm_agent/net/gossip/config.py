"""Tuning of the gossip layer. The defaults suit a LAN: a crashed member of a small cluster is declared dead by
every other member within about 3 s, and a healthy cluster on a busy machine does not flap."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class GossipConfig:
    # SWIM protocol period, seconds: each member probes one other member per period (round robin over a
    # shuffled list), so a dead member is first probed within about n periods by each of the others.
    probe_interval: float = 0.5
    # How long a direct probe waits for its ack (seconds) before it asks `indirect_checks` other members
    # to probe the target too. Scaled by local health (see `awareness_max_mult`).
    probe_timeout: float = 0.25
    # Members asked to probe a target on our behalf when it did not answer us directly.
    indirect_checks: int = 3
    # Minimum suspicion timeout, in probe periods, before a suspect member is declared dead; scaled by
    # log10 of the cluster size (memberlist's formula). Also sets how many independent confirmations
    # (suspicion_mult - 2) drive the timeout from its maximum down to this minimum (Lifeguard).
    suspicion_mult: int = 3
    # The suspicion timeout starts at suspicion_max_mult times the minimum when nobody else confirms.
    suspicion_max_mult: int = 3
    # Period of gossip rounds (seconds): each round sends queued updates to `gossip_nodes` random members.
    gossip_interval: float = 0.1
    gossip_nodes: int = 3
    # Period of the TCP full-state exchange with one random member (seconds); stretched beyond 32 members.
    push_pull_interval: float = 15.0
    # How long dead/left members and table tombstones are remembered (seconds).
    dead_reap: float = 60.0
    # Dead members still receive gossip this long (seconds), so that one declared dead by mistake learns
    # it and refutes.
    gossip_to_dead: float = 15.0
    # An update is retransmitted retransmit_mult * ceil(log10(n + 1)) times.
    retransmit_mult: int = 4
    # Lifeguard's local health multiplier: when this node misses acks or nacks (it is slow, not the others),
    # its own probe timeout and period are stretched up to this many times.
    awareness_max_mult: int = 8
    # Largest UDP datagram sent, encryption included (bytes); keeps clear of a 1500-byte MTU.
    max_packet_size: int = 1400
    # Seconds a TCP push-pull (connect, exchange, close) may take.
    tcp_timeout: float = 5.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"gossip config {field.name}={value!r}: must be a positive number")
            if field.type == "int" and not isinstance(value, int):
                raise ValueError(f"gossip config {field.name}={value!r}: must be an integer")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError(f"gossip config probe_timeout={self.probe_timeout!r}: must be shorter than "
                             f"probe_interval ({self.probe_interval!r}) to leave time for indirect probes")
        if self.max_packet_size < 512:
            raise ValueError(f"gossip config max_packet_size={self.max_packet_size!r}: must be at least 512")
