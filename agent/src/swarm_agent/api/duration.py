"""Durations as the Engine API carries them: integer nanoseconds.

Users may also write Go-style duration strings (``1m30s``, ``500ms``), which
the Docker CLI accepts on its flags; we accept them wherever a duration goes.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: object) -> object:
    """Turn ``1m30s`` into nanoseconds; leave numbers for pydantic to check."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if not body:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    if pos != len(body):
        raise ValueError(f"invalid duration {value!r}: use a number of nanoseconds or a form like 1m30s")
    return sign * int(round(total))


def format_duration(ns: int) -> str:
    """Render nanoseconds the way Go's time.Duration prints (for humans)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return f"{sign}{ns / size:g}{unit}"
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    seconds = rest / 1_000_000_000
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{seconds:g}s"


SECOND = 1_000_000_000

Duration = Annotated[int, BeforeValidator(parse_duration), Field(ge=0)]
"""A non-negative duration in nanoseconds; accepts ``1m30s``."""
