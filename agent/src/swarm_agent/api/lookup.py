"""Finding an object the way Docker does: full ID, then name, then a unique ID prefix."""

from collections.abc import Callable, Iterable
from typing import TypeVar

from .errors import NotFound

T = TypeVar("T")


def resolve(kind: str, ref: str, objects: Iterable[T], id_of: Callable[[T], str], names_of: Callable[[T], list[str]]) -> T:
    items = list(objects)
    for obj in items:
        if id_of(obj) == ref:
            return obj
    named = [obj for obj in items if ref in names_of(obj)]
    if len(named) == 1:
        return named[0]
    prefixed = [obj for obj in items if id_of(obj).startswith(ref)] if ref else []
    if len(prefixed) == 1:
        return prefixed[0]
    if len(named) > 1 or len(prefixed) > 1:
        raise NotFound(f"{kind} {ref} is ambiguous ({len(named) or len(prefixed)} matches found)")
    raise NotFound(f"{kind} {ref} not found")
