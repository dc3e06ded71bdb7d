# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Durations, sizes and CPU counts as users write them, turned into the API's integers.

The agent has its own duration parser, but modules run on managed hosts where the
agent's package may not be installed, so the collection carries its own.
"""

from __future__ import annotations

import re

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1000,
    "\u00b5s": 1000,
    "ms": 1000 ** 2,
    "s": 1000 ** 3,
    "m": 60 * 1000 ** 3,
    "h": 3600 * 1000 ** 3,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|\u00b5s|ms|s|m|h)")

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgtp]?)(i?b)?$", re.IGNORECASE)


def parse_duration(value: object) -> int:
    """``1m30s`` (Go's notation, as the docker CLI takes it) to nanoseconds.

    A bare number other than 0 is refused: Ansible users mean seconds, the API means
    nanoseconds, and guessing either way silently sets the wrong value.
    """
    text = str(value).strip()
    if text in ("0", "0s"):
        return 0
    if not text or text.lstrip("+").isdigit():
        raise ValueError("invalid duration %r: give a unit, for example 10s, 1m30s or 500ms" % (value,))
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS_NS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError("invalid duration %r: use a form like 1h, 1m30s, 10s or 500ms" % (value,))
    return int(round(total))


def parse_size(value: object) -> int:
    """``64M``, ``1.5G``, ``512k`` or a number of bytes to bytes (binary units, as Docker reads them)."""
    if isinstance(value, bool):
        raise ValueError("invalid size %r: want a number of bytes or a form like 64M" % (value,))
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError("invalid size %r: want a number of bytes or a form like 64M, 1G or 512K" % (value,))
    number, unit = match.group(1), match.group(2).lower()
    return int(round(float(number) * _SIZE_UNITS[unit]))


def nano_cpus(value: object) -> int:
    """CPUs (``0.5``) to the API's billionths of a CPU."""
    cpus = float(str(value))
    if cpus < 0:
        raise ValueError("invalid CPU count %r: must not be negative" % (value,))
    return int(round(cpus * 1e9))
