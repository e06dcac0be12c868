"""The lazy package namespaces (burrow.lazy): each exported name resolves, to the object its TYPE_CHECKING import
names, so the two lists in a package's __init__ cannot drift apart unnoticed."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGES = ["memory", "model", "train", "evaluate", "generate", "risks", "tasks", "serve"]


def _type_checking_imports(package: str) -> dict[str, str]:
    """name -> the module its ``if TYPE_CHECKING:`` import takes it from."""
    tree = ast.parse(Path(importlib.import_module(package).__file__ or "").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                out.update({a.name: imp.module for a in imp.names})
    return out


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_is_the_object_its_type_checking_import_names(name) -> None:
    package = f"burrow.{name}"
    pkg = importlib.import_module(package)
    typed = _type_checking_imports(package)
    assert typed, f"{package} imports nothing lazily"
    for export in pkg.__all__:
        value = getattr(pkg, export)
        if export in typed:
            assert value is getattr(importlib.import_module(typed[export]), export), (package, export)
        assert export in dir(pkg)
    assert set(typed) - {"RetrievalLM"} <= set(pkg.__all__)  # only annotations import more


def test_an_unknown_name_is_an_attribute_error() -> None:
    import burrow.memory

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        burrow.memory.Nope  # noqa: B018
