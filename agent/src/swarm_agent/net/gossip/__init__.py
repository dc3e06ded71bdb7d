"""Gossip on port 7946: SWIM membership with Lifeguard's refinements and replicated tables (endpoints,
overlay peers) with Lamport times and tombstones, over UDP with TCP push-pull, encrypted with AES-GCM."""
from .config import GossipConfig
from .gossip import DEFAULT_PORT, Gossip, GossipStats
from .keyring import AuthenticationError, Keyring
from .membership import Member
from .tables import Entry

__all__ = ["DEFAULT_PORT", "AuthenticationError", "Entry", "Gossip", "GossipConfig", "GossipStats", "Keyring",
           "Member"]
