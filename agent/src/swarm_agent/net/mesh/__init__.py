"""The routing mesh: service VIPs and published ports balanced over healthy tasks, on nftables or IPVS."""
from .model import Backend, Frontend, MeshService, MeshState, mesh_state
from .select import MeshBackend, NoMeshBackend, choose_backend

__all__ = ["Backend", "Frontend", "MeshBackend", "MeshService", "MeshState", "NoMeshBackend", "choose_backend",
           "mesh_state"]
