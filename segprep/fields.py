"""Checks of the JSON files segprep reads back (metadata.json, a run's segprep.json): every key a reader uses, with
its type, so that a missing, mistyped or hand-edited value is one line naming the file and the key, never a
KeyError or TypeError deep inside a command.

A schema is a dict {key: Field}; `check(obj, schema, where, remedy)` raises `FieldError`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable


class FieldError(ValueError):
    """A JSON file that does not hold what segprep wrote there."""


@dataclasses.dataclass(frozen=True)
class Field:
    what: str  # "a positive integer", ... (for the message)
    ok: Callable[[object], bool]
    required: bool = True


def integer(minimum: int = 0) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def text(v: object) -> bool:
    return isinstance(v, str)


def list_of(item: Callable[[object], bool], length: int | None = None) -> Callable[[object], bool]:
    return lambda v: isinstance(v, list) and (length is None or len(v) == length) and all(item(x) for x in v)


def color(v: object) -> bool:
    return list_of(integer(0), 3)(v) and all(c <= 255 for c in v)


def optional(ok: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or ok(v)


def check(obj: object, schema: dict[str, Field], where: str, remedy: str) -> None:
    """Raises `FieldError` for the first key of `schema` that `obj` lacks (when required) or holds a value of
    another kind; `where` names the file (and the part of it), `remedy` says what to do."""
    if not isinstance(obj, dict):
        raise FieldError(f"{where} is not a JSON object: {remedy}")
    for key, field in schema.items():
        if key not in obj:
            if field.required:
                raise FieldError(f"{where} has no {key!r}: {remedy}")
        elif not field.ok(obj[key]):
            shown = repr(obj[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise FieldError(f"{where}: {key!r} must be {field.what}, not {shown}: {remedy}")
