"""Package namespaces whose names are imported from their submodules on first use (PEP 562).

    if TYPE_CHECKING:                      # what type checkers and readers see
        from burrow.memory.memory import Memory
    __all__ = ["Memory"]
    __getattr__, __dir__ = lazy_exports(__name__, {"memory": ["Memory"]})

``from burrow.memory import Memory`` works as before, but ``import burrow.memory.neighbours`` no longer
imports torch through the package: a command's ``--help``, which only reads config defaults, starts in
well under a second instead of ~3 s.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, modules: dict[str, list[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``modules[sub]`` comes from
    ``package.sub``, imported when the name is first read and then kept in the package's namespace."""
    where = {name: sub for sub, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        sub = where.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{sub}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
