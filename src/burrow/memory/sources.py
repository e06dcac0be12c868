"""How a memory document's source is shown: its title, else its path relative to the corpus root.

A document's stored source is where the reader found it, ``"/abs/path/file.txt:line 12"`` (or
``"hf:name:row N"``, or a source field of the input). Shown to users (pages, attributions, search
results) it becomes the document's title when the input had one, else the path relative to the
corpus root given at build time (``corpus_roots`` in the memory manifest: the directories of the
build inputs). A memory built before roots were recorded uses the deepest directory common to its
documents' files, so no machine path leaks either way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_PATH_LOC = re.compile(r"^(?P<path>.+?)(?P<loc>:(?:line|row) \d+)?$")


def corpus_roots(inputs: Sequence[str]) -> list[str]:
    """The directories the build inputs are relative to (a file's parent; a directory itself), absolute."""
    roots = []
    for item in inputs:
        p = Path(item).expanduser()
        if not p.exists():
            continue
        p = p.resolve()
        roots.append(str(p if p.is_dir() else p.parent))
    return sorted(set(roots))


def split_source(source: str) -> tuple[str, str]:
    """(path, ":line N" / ":row N" or "") of a stored source."""
    m = _PATH_LOC.match(source)
    return (m.group("path"), m.group("loc") or "") if m else (source, "")


def relative_source(source: str, roots: Sequence[str]) -> str:
    """``source`` with its absolute path made relative to the deepest root containing it (unchanged otherwise)."""
    path, loc = split_source(source)
    if not os.path.isabs(path):
        return source
    best = None
    for root in roots:
        try:
            rel = os.path.relpath(path, root)
        except ValueError:  # pragma: no cover - another drive (Windows)
            continue
        if not rel.startswith("..") and (best is None or len(rel) < len(best)):
            best = rel
    return (best if best is not None else os.path.basename(path)) + loc


def fallback_roots(sources: Sequence[str]) -> list[str]:
    """For a memory without recorded roots: the common directory of its documents' absolute paths."""
    dirs = {os.path.dirname(p) for p in (split_source(s)[0] for s in sources) if os.path.isabs(p)}
    if not dirs:
        return []
    return [os.path.commonpath(sorted(dirs))]


def display_sources(store: Any, manifest: dict[str, Any]) -> list[str]:
    """Per memory document: its title if it has one, else its source relative to the corpus root."""
    docs = store.docs
    roots = manifest.get("corpus_roots") or fallback_roots([d.source for d in docs])
    return [d.title.strip() if d.title and d.title.strip() else relative_source(d.source, roots) for d in docs]
