"""Task and node timestamps: ISO-8601 strings on the wire, float seconds in the control loop.

The orchestrator compares timestamps written by managers and by workers, so it
parses whatever precision they carry (Docker writes nanoseconds) and renders
``now`` the same way ``api.models.now`` does.
"""

from __future__ import annotations

import datetime as _dt
import logging
from functools import lru_cache

log = logging.getLogger(__name__)


@lru_cache(maxsize=65536)
def parse_timestamp(text: str) -> float:
    """Seconds since the epoch; 0.0 (the distant past) for an unreadable value.

    A bad timestamp reported by one worker must not stop the leader's loop;
    reading it as the distant past lets delays that depend on it expire.
    """
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        log.warning("unreadable timestamp %r, treating it as the epoch", text)
        return 0.0
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.timestamp()


def format_timestamp(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat().replace("+00:00", "Z")
