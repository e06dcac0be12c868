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

import numpy as np

from burrow.errors import BurrowError
from burrow.memory import Memory

log = logging.getLogger(__name__)


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


def memory_keys(memory: Memory, chunk_ids: np.ndarray) -> np.ndarray:
    """(len(chunk_ids), e) stored keys of memory chunks: :meth:`Memory.stored_keys`."""
    return memory.stored_keys(chunk_ids)


def subset_neighbours(memory: Memory, query_keys: np.ndarray, fraction: float, k: int,
                      seed: int = 0) -> tuple[np.ndarray, MemorySubset]:
    """Neighbour ids (q_in, k) of ``query_keys`` searched only among the kept documents' chunks."""
    docs = subset_documents(memory.store.n_docs, fraction, seed)
    chunk_ids = np.flatnonzero(np.isin(memory.chunks.docs, docs))  # (c,) sorted memory chunk ids
    _, ids = memory.search_keys(query_keys, k, within=chunk_ids)  # (q_in, k)
    tokens = int(memory.chunks.lengths[chunk_ids].sum())
    return ids, MemorySubset(float(fraction), len(docs), len(chunk_ids), tokens)


def sweep_memory(memory: Memory, query_keys: np.ndarray, full_ids: np.ndarray,
                 scores: dict[str, Callable[[np.ndarray], float]], fractions: Sequence[float], k: int,
                 seed: int = 0) -> list[MemorySubset]:
    """bpb of each RETRO[ON] model in ``scores`` (name -> ids -> bpb) at each memory fraction."""
    out: list[MemorySubset] = []
    for fraction in sorted(fractions):
        if fraction >= 1.0:
            ids = full_ids[:, :k]
            point = MemorySubset(1.0, memory.store.n_docs, len(memory.chunks), int(memory.chunks.lengths.sum()))
        else:
            ids, point = subset_neighbours(memory, query_keys, fraction, k, seed)
        if out and point.docs == out[-1].docs:  # nested subsets: the same documents, the same row again
            log.info("memory fraction %.4g keeps the same %d documents as %.4g: not scored again", fraction,
                     point.docs, out[-1].fraction)
            continue
        log.info("memory fraction %.4g: %d documents, %d chunks", fraction, point.docs, point.chunks)
        point.bpb = {name: fn(ids) for name, fn in scores.items()}
        out.append(point)
    return out
