"""Sweeps of RETRO[ON]: bpb against neighbours at evaluation (k) and against memory size.

Shape legend: q_in input chunks, e key width, k neighbours, c memory chunks.

Memory size: the memory is subsampled by **documents** — a fixed random permutation of its
documents (seeded), of which the first ceil(f · D) are kept, so smaller subsets are nested in larger
ones and no document is cut in half (continuations stay true). A flat (exact) index is built over
the kept chunks' stored keys (``MEMDIR/embeddings``), the cached query keys are searched in it, and
the hits mapped back to memory chunk ids. Fraction 1 reuses the main neighbours, so its point equals
the main RETRO[ON] score (with an approximate main index, the subsets are exact and it is not).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from burrow.artefacts import read_json
from burrow.errors import BurrowError
from burrow.memory.index import search

log = logging.getLogger(__name__)

DEFAULT_SWEEP_K = (1, 2, 4, 10)
DEFAULT_SWEEP_MEMORY = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)

#: Scores one RETRO[ON] model given input-chunk neighbour ids (q_in, ≥k) and k; returns bpb.
ScoreFn = Callable[[np.ndarray, int], float]


@dataclass
class MemorySubset:
    """One point of the memory-size sweep."""

    fraction: float
    docs: int  # memory documents kept
    chunks: int  # memory chunks kept
    tokens: int  # memory tokens kept
    bpb: dict[str, float] = field(default_factory=dict)  # RETRO[ON] model name -> bpb


def sweep_k(score: ScoreFn, ids: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """bpb of one RETRO[ON] model at each k in ``ks`` (the first k of the cached neighbours)."""
    too_many = [k for k in ks if k > ids.shape[1]]
    if too_many:
        raise BurrowError(f"k sweep asks for {too_many} neighbours but {ids.shape[1]} were retrieved")
    return {int(k): score(ids, int(k)) for k in ks}


def subset_documents(n_docs: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of the documents kept at ``fraction``: a seeded permutation's first ceil(f·D)."""
    if not 0 < fraction <= 1:
        raise BurrowError(f"memory fraction must be in (0, 1], got {fraction}")
    perm = np.random.default_rng(seed).permutation(n_docs)
    return np.sort(perm[: max(1, math.ceil(fraction * n_docs))])


def memory_keys(memory: Any, chunk_ids: np.ndarray) -> np.ndarray:
    """(len(chunk_ids), e) stored keys of memory chunks, read shard by shard from ``embeddings/``.

    Falls back to reconstructing them from a flat index when the shards were not kept.
    """
    emb_manifest = memory.dir / "embeddings.manifest.json"
    if emb_manifest.exists():
        shards = [memory.dir / "embeddings" / p for p in read_json(emb_manifest)["shards"]]
        if all(p.exists() for p in shards):
            return _keys_from_shards(shards, chunk_ids)
    try:
        return np.stack([memory.index.reconstruct(int(i)) for i in chunk_ids]).astype(np.float32)
    except RuntimeError:
        raise BurrowError(f"{memory.dir} kept no key shards and its index cannot return keys; rebuild the "
                          "memory with keep_embeddings to run the memory-size sweep") from None


def _keys_from_shards(shards: list[Any], chunk_ids: np.ndarray) -> np.ndarray:
    parts, start = [], 0
    for path in shards:
        arr = np.load(path, mmap_mode="r")  # (shard rows, e)
        sel = chunk_ids[(chunk_ids >= start) & (chunk_ids < start + len(arr))] - start
        parts.append(np.asarray(arr[sel], dtype=np.float32))
        start += len(arr)
    return np.concatenate(parts)


def subset_neighbours(memory: Any, query_keys: np.ndarray, fraction: float, k: int,
                      seed: int = 0) -> tuple[np.ndarray, MemorySubset]:
    """Neighbour ids (q_in, k) of ``query_keys`` searched only among the kept documents' chunks."""
    import faiss

    docs = subset_documents(memory.store.n_docs, fraction, seed)
    chunk_ids = np.flatnonzero(np.isin(memory.chunks.docs, docs))  # (c,) sorted memory chunk ids
    keys = memory_keys(memory, chunk_ids)
    index = faiss.IndexFlatL2(keys.shape[1])
    index.add(np.ascontiguousarray(keys))
    _, local = search(index, query_keys, k)  # (q_in, k) positions in chunk_ids
    ids = np.where(local < 0, -1, chunk_ids[np.maximum(local, 0)])
    tokens = int(memory.chunks.lengths[chunk_ids].sum())
    return ids, MemorySubset(float(fraction), len(docs), len(chunk_ids), tokens)


def sweep_memory(memory: Any, query_keys: np.ndarray, full_ids: np.ndarray,
                 scores: dict[str, Callable[[np.ndarray], float]], fractions: Sequence[float], k: int,
                 seed: int = 0) -> list[MemorySubset]:
    """bpb of each RETRO[ON] model in ``scores`` (name -> ids -> bpb) at each memory fraction."""
    out = []
    for fraction in sorted(fractions):
        if fraction >= 1.0:
            ids = full_ids[:, :k]
            point = MemorySubset(1.0, memory.store.n_docs, len(memory.chunks), int(memory.chunks.lengths.sum()))
        else:
            ids, point = subset_neighbours(memory, query_keys, fraction, k, seed)
        log.info("memory fraction %.4g: %d documents, %d chunks", fraction, point.docs, point.chunks)
        point.bpb = {name: fn(ids) for name, fn in scores.items()}
        out.append(point)
    return out
