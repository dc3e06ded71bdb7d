"""Docker's ``filters`` query parameter: ``{"name": {"web": true}}`` or ``{"name": ["web"]}``."""

import json
from collections.abc import Mapping

from .errors import BadRequest

Filters = dict[str, list[str]]


def parse_filters(raw: str | None, allowed: set[str]) -> Filters:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"invalid filters: not JSON ({exc.msg})") from exc
    if not isinstance(data, Mapping):
        raise BadRequest("invalid filters: want an object of filter names")
    out: Filters = {}
    for name, values in data.items():
        if name not in allowed:
            raise BadRequest(f"invalid filter '{name}'")
        if isinstance(values, Mapping):
            out[name] = [str(k) for k, v in values.items() if v]
        elif isinstance(values, list):
            out[name] = [str(v) for v in values]
        else:
            raise BadRequest(f"invalid filter '{name}': want a list or an object of values")
    return out


def match_label(labels: Mapping[str, str], wanted: list[str]) -> bool:
    """``label=key`` or ``label=key=value``, all of them must match."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True
