"""Precomputed neighbours: k nearest memory chunks for every chunk of a token store.

With ``exclude_same_doc`` (the memory's own chunks as queries), neighbours from the query's own
document are dropped — RETRO's causality guard, else chunk u could retrieve its own continuation.
Tables are stored inside the memory directory as .npy (memory-mappable) with a manifest each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import config_hash
from burrow.defaults import K_MAX
from burrow.errors import BurrowError
from burrow.memory.index import list_order, search

log = logging.getLogger(__name__)



def retrieval_width(k: int) -> int:
    """Neighbours to retrieve (and cache) so that ``k`` and every smaller k are slices: max(k, K_MAX)."""
    return max(int(k), K_MAX)


def search_excluding(
    index: Any, queries: np.ndarray, k: int, query_docs: np.ndarray | None, chunk_docs: np.ndarray,
    batch: int = 4096, progress: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest chunks per query, skipping chunks whose document equals the query's document.

    Returns (distances (q, k) float32, ids (q, k) int64); missing neighbours are -1 / inf.
    """
    n = len(queries)
    order = list_order(index, queries) if n > batch else None  # IVF: queries sharing lists side by side
    dists = np.full((n, k), np.inf, dtype=np.float32)
    ids = np.full((n, k), -1, dtype=np.int64)
    # chunks outside each query's document: a row holding them all is complete, however short of k
    others = np.full(n, int(index.ntotal), dtype=np.int64)
    if query_docs is not None and n:
        per_doc = np.bincount(chunk_docs, minlength=int(query_docs.max()) + 1)
        others -= np.where(query_docs >= 0, per_doc[np.maximum(query_docs, 0)], 0)
    for s in range(0, n, batch):
        rows = slice(s, s + batch) if order is None else order[s : s + batch]
        qd = None if query_docs is None else query_docs[rows]
        d, i = _search_block(index, queries[rows], k, qd, chunk_docs, others[rows])
        dists[rows], ids[rows] = d, i
        if progress is not None:
            progress(len(d))
    return dists, ids


def _search_block(index: Any, q: np.ndarray, k: int, qdocs: np.ndarray | None,
                  chunk_docs: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ntotal = int(index.ntotal)
    width = k if qdocs is None else k + 16
    d, i, short = _filter(*search(index, q, min(width, ntotal)), k, qdocs, chunk_docs)
    rows = np.flatnonzero(short & ((i >= 0).sum(axis=1) < others))
    while len(rows) and width < ntotal:
        # Long documents crowd the top of the list with their own chunks: widen only those rows.
        width *= 4
        sub_docs = None if qdocs is None else qdocs[rows]
        d2, i2, s2 = _filter(*search(index, q[rows], min(width, ntotal)), k, sub_docs, chunk_docs)
        d[rows], i[rows] = d2, i2
        rows = rows[s2 & ((i2 >= 0).sum(axis=1) < others[rows])]
    return d, i


def _filter(d: np.ndarray, i: np.ndarray, k: int, qdocs: np.ndarray | None,
            chunk_docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop -1 and same-document hits, keep the first k in distance order; flag rows left short."""
    bad = i < 0
    if qdocs is not None:
        bad |= chunk_docs[np.where(i < 0, 0, i)] == qdocs[:, None]
    order = np.argsort(bad, axis=1, kind="stable")[:, :k]  # good hits first, distance order kept
    d = np.take_along_axis(d, order, 1)
    i = np.take_along_axis(i, order, 1)
    kept_bad = np.take_along_axis(bad, order, 1)
    d[kept_bad], i[kept_bad] = np.inf, -1
    if d.shape[1] < k:
        pad = k - d.shape[1]
        d = np.pad(d, ((0, 0), (0, pad)), constant_values=np.inf)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        kept_bad = np.pad(kept_bad, ((0, 0), (0, pad)), constant_values=True)
    short = np.asarray(kept_bad.any(axis=1))
    return d, i, short


def store_table_name(store_dir: str | Path) -> str:
    """Default table name of another token store: its folder name and 8 hex digits of its full path.

    The folder name alone let ``train/tokens`` and ``valid/tokens`` share one table, each overwriting
    the other's on every training run.
    """
    path = Path(store_dir).resolve()
    return f"{path.name}-{config_hash(str(path))[:8]}"


def neighbour_table_paths(memory_dir: Path, name: str, k: int) -> tuple[Path, Path, str]:
    """(ids path, distances path, manifest kind) of neighbour table ``name`` with ``k`` neighbours.

    ``name`` is a file name inside the memory's ``neighbours/`` folder: a path (``../x``) is refused.
    """
    if name in ("", ".", "..") or name != Path(name).name:  # (store_table_name may start one with a dot)
        raise BurrowError(f"neighbour table name {name!r} must be a plain name (a file name), not a path")
    kind = f"{name}.k{k}"
    d = memory_dir / "neighbours"
    return d / f"{kind}.ids.npy", d / f"{kind}.dist.npy", kind
