"""Type checks for config dataclasses filled from TOML, JSON or the command line: a wrong type is one
:class:`BurrowError` line naming the field, not a ``ValueError`` deep in a range check or a model build."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from burrow.errors import BurrowError

_CHECKS: dict[str, tuple[str, Any]] = {
    "int": ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
}


def check_field_types(obj: Any, what: str) -> None:
    """Raise unless each field of dataclass ``obj`` annotated ``int``, ``float``, ``bool`` or ``str`` (or one
    of those ``| None``) holds a value of that type; other annotations are left to the class."""
    for f in dataclasses.fields(obj):
        ann = str(f.type).replace(" ", "")
        optional = ann.endswith("|None")
        base = ann.removesuffix("|None")
        if base not in _CHECKS:
            continue
        value = getattr(obj, f.name)
        if value is None and optional:
            continue
        name, ok = _CHECKS[base]
        if not ok(value):
            raise BurrowError(f"{what} {f.name} must be {name}, got {value!r}")


def check_seed(seed: int) -> None:
    """A seed numpy and torch both take: [0, 2^63) (a negative one was numpy's traceback)."""
    if not 0 <= seed < 2**63:
        raise BurrowError(f"seed must be in [0, 2^63), got {seed}")
