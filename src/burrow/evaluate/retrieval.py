"""Neighbours of the evaluation chunks, retrieved once per (memory, data set) at k_max and cached on disk.

Shape legend: q_in input chunks (RETRO[ON] queries), q target chunks (leakage queries), k neighbours,
r = 2m retrieved tokens, e key width.

Two query sets, both run through the memory's frozen encoder and index:

* **target chunks** C_u = d[u·m:(u+1)·m] — the leakage analysis's queries (§2.6: C's own text).
* **input chunks** — RETRO[ON]'s queries. In the one chunk layout (:mod:`burrow.data.layout`) input
  chunk u + 1 of x *is* C_u, a memory-aligned chunk; every token of it is an input at or before
  position (u+2)·m − 1, the first position its neighbours condition, so nothing retrieved depends on
  a token the model has not yet been given. They are the complete target chunks, so their
  neighbours are rows of the target chunks' (searched once).

No same-document exclusion: the memory holds no evaluation documents after test-set hygiene, and the
leakage analysis measures whatever overlap remains. Every model, every k ≤ k_max (the first k) and
the leakage analysis reuse the same cached neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import atomic_path, config_hash, damaged, read_manifest, write_manifest
from burrow.defaults import K_MAX
from burrow.errors import BurrowError
from burrow.evaluate.bpb import Retrieved
from burrow.evaluate.data import EvalData
from burrow.memory import Memory
from burrow.memory.chunks import neighbour_values

log = logging.getLogger(__name__)


@dataclass
class QueryNeighbours:
    """Keys of a set of query chunks and their k_max nearest memory chunks."""

    keys: np.ndarray  # (q, e) float32 frozen-encoder keys of the queries
    ids: np.ndarray  # (q, k_max) int64 memory chunk ids, -1 where missing
    distances: np.ndarray  # (q, k_max) float32 squared L2


def encode_queries(memory: Memory, chunks: np.ndarray) -> np.ndarray:
    """(q, e) keys of token chunks (q, m): :meth:`Memory.encode_tokens`."""
    return memory.encode_tokens(chunks)


def search_queries(memory: Memory, keys: np.ndarray, k: int) -> QueryNeighbours:
    """Search the memory for ``k`` neighbours of each key (no document exclusion)."""
    dists, ids = memory.search_keys(keys, k)
    return QueryNeighbours(keys, ids, dists)


def _cache_paths(cache_dir: Path, kind: str, key: str) -> tuple[Path, str]:
    name = f"{kind}-{key}"
    return cache_dir / f"{name}.npz", name


def _load_cached(cache_dir: Path | None, kind: str, key: str) -> QueryNeighbours | None:
    if cache_dir is None:
        return None
    path, name = _cache_paths(cache_dir, kind, key)
    if read_manifest(cache_dir, name) is None or not path.exists():
        return None
    try:
        with damaged(path):  # the one list of what a damaged artefact file raises
            z = np.load(path)
            return QueryNeighbours(z["keys"], z["ids"], z["distances"])
    except BurrowError:
        log.warning("cached neighbours %s are damaged: computing them again", path)
        return None


def _save_cached(cache_dir: Path | None, kind: str, key: str, qn: QueryNeighbours, info: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    path, name = _cache_paths(cache_dir, kind, key)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, keys=qn.keys, ids=qn.ids, distances=qn.distances)
    write_manifest(cache_dir, name, inputs=key, file=path.name, queries=len(qn.ids), k=int(qn.ids.shape[1]),
                   missing=int((qn.ids < 0).sum()), **info)


def memory_fingerprint(memory: Memory) -> str:
    """Identifies a memory's contents and index (its manifests)."""
    index_m = read_manifest(memory.dir, "index") or {}
    return config_hash({"memory": memory.manifest, "index": index_m.get("inputs")})


def eval_neighbours(memory: Memory, data: EvalData, kind: str, k_max: int = K_MAX,
                    cache_dir: Path | None = None) -> QueryNeighbours:
    """Neighbours of ``data``'s ``kind`` chunks ("input": RETRO[ON] queries, "target": leakage queries).

    Cached in ``cache_dir`` keyed by the memory, the data set's tokens and k_max. The input chunks
    are the complete target chunks, so "input" selects rows of the (cached) "target" search.
    """
    if kind not in ("input", "target"):
        raise BurrowError(f"query kind must be 'input' or 'target', not {kind!r}")
    if memory.chunk_size != data.chunk_size:
        raise BurrowError(f"memory chunk size {memory.chunk_size} differs from the data's {data.chunk_size}")
    if kind == "input":
        t = eval_neighbours(memory, data, "target", k_max, cache_dir)
        rows = data.input_rows_in_targets()
        return QueryNeighbours(t.keys[rows], t.ids[rows], t.distances[rows])
    key = config_hash({"memory": memory_fingerprint(memory), "data": data.fingerprint(), "k": k_max, "kind": kind})
    cached = _load_cached(cache_dir, kind, key)
    if cached is not None:
        log.info("reusing cached %s-chunk neighbours (%s)", kind, key)
        return cached
    chunks = data.target_chunks()
    log.info("retrieving %d neighbours for %d %s chunks", k_max, len(chunks), kind)
    qn = search_queries(memory, encode_queries(memory, chunks), k_max)
    _save_cached(cache_dir, kind, key, qn, {"memory": str(memory.dir), "data": data.fingerprint(),
                                            "chunk_size": data.chunk_size})
    return qn


def values_of(memory: Memory) -> Callable[[np.ndarray], np.ndarray]:
    """ids (...,) -> retrieved values (..., r) [chunk, continuation] from ``memory``'s token store."""
    store, table = memory.store, memory.chunks
    return lambda ids: neighbour_values(store, table, ids)


def retrieved_from_ids(ids: np.ndarray, data: EvalData, k: int,
                       values: Callable[[np.ndarray], np.ndarray]) -> Retrieved:
    """The :data:`Retrieved` callable of the scorer: the first ``k`` of each input chunk's neighbours.

    ``ids`` (q_in, ≥k) are in :meth:`EvalData.input_chunks` order. Input chunk u of a document's x
    holds query u − 1; input chunk 0 (pads and s) has no neighbours (mask False).
    """
    if ids.shape[1] < k:
        raise BurrowError(f"k = {k} neighbours asked but only {ids.shape[1]} were retrieved")
    missing = np.full((1, k), -1, dtype=ids.dtype)

    def get(doc: int, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        q0, q1 = int(data.input_offsets[doc]), int(data.input_offsets[doc + 1])
        if first + count - 1 > q1 - q0:
            raise BurrowError("a window asked for neighbours past its document's last complete chunk")
        rows = np.concatenate([missing if u == 0 else ids[q0 + u - 1 : q0 + u, :k]
                               for u in range(first, first + count)])  # (l, k)
        return values(rows), rows >= 0  # (l, k, r), (l, k)

    return get
