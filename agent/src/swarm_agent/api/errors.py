"""Errors in Docker's shape: an HTTP status and ``{"message": ...}``."""

from pydantic import ValidationError


class ApiError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class NotManager(ApiError):
    """What a worker (or a node in no swarm) answers on manager-only routes: Docker's words."""

    status = 503


NOT_IN_SWARM = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
    "to connect this node to swarm and try again."
)
WORKER_NODE = (
    "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
    "Please run this command on a manager node or promote the current node to a manager."
)
SWARM_LOCKED = (
    'Swarm is encrypted and needs to be unlocked before it can be used. Please use "docker swarm unlock" to unlock it.'
)
NO_LEADER = "The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online."


def describe_validation(exc: ValidationError) -> str:
    """Name each bad field by its wire path, e.g. ``TaskTemplate.ContainerSpec.Image: is required``."""
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] != "value_error" and not isinstance(err.get("input"), (dict, list)):
            msg = f"{msg} (got {err.get('input')!r})"
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)
