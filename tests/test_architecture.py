"""The floors of docs/architecture.md hold: no module imports from a higher floor or from a sibling stage
on its own floor, and there is no import cycle — function-local imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: burrow's top-level packages and modules by floor (docs/architecture.md).
FLOORS: dict[str, int] = {
    "errors": 1, "defaults": 1, "lazy": 1, "device": 1, "artefacts": 1, "hub": 1, "hfcache": 1, "footprint": 1,
    "fieldtypes": 1,
    "data": 2, "model": 2,
    "memory": 3, "lm": 3,
    "train": 4, "evaluate": 4, "generate": 4, "methods": 4,
    "serve": 5, "demo": 5, "tasks": 5, "risks": 5,
    "cli": 6, "__main__": 6,
}
#: Modules that belong to another part: the preset table is the model's.
ALIASES = {"presets": "model"}
#: Floors whose parts are siblings: they never import each other.
SIBLING_FLOORS = (2, 4)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (annotations only; never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _imports(path: Path, type_only: bool = True) -> set[str]:
    """Every burrow module ``path`` imports, at any depth of its code (function-local imports too);
    without ``type_only``, imports that only annotations use (``if TYPE_CHECKING:``) are left out."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if type_only else _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "burrow")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "burrow":
                continue
            found.add(target)
            # ``from burrow.x import y`` may name a submodule y
            found.update(f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}"))
    return {name for name in found if _exists(name)} - {module}


def _exists(name: str) -> bool:
    p = SRC.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _graph(type_only: bool = True) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, type_only) for p in sorted((SRC / "burrow").rglob("*.py"))}


def _part(module: str) -> str:
    """The floor part of a module: ``burrow.train.loop`` -> ``train``; ``burrow`` -> ``""``."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else ""
    return ALIASES.get(part, part)


GRAPH = _graph()
#: What runs: a type-only import (``if TYPE_CHECKING:``) of a module on the same floor, for annotations,
#: creates no import cycle (it still counts for the floors above).
RUNTIME_GRAPH = _graph(type_only=False)


def test_every_part_has_a_floor() -> None:
    missing = sorted({_part(m) for m in GRAPH} - set(FLOORS) - {""})
    assert not missing, f"give these a floor in docs/architecture.md and FLOORS: {missing}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_stay_on_or_below_their_floor(module: str) -> None:
    part = _part(module)
    if not part:  # the package root re-exports BurrowError only
        assert GRAPH[module] <= {"burrow.errors"}
        return
    floor = FLOORS[part]
    wrong = []
    for target in sorted(GRAPH[module]):
        other = _part(target)
        if other == part or not other:
            continue
        if FLOORS[other] > floor:
            wrong.append(f"{target} (floor {FLOORS[other]} above {floor})")
        elif FLOORS[other] == floor and floor in SIBLING_FLOORS:
            wrong.append(f"{target} (a sibling on floor {floor})")
    assert not wrong, f"{module} imports " + ", ".join(wrong)


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over modules (imports that run); a package's ``__init__``
    re-exporting its own modules is not a cycle when the modules never import the package back."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in RUNTIME_GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(RUNTIME_GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
