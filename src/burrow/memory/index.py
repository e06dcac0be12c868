"""FAISS index over chunk keys, chosen by size: exact below a threshold, HNSW or IVF-PQ above.

Distance is squared L2, as in the paper. The factory string and the search parameters can be
overridden; approximate indexes are trained on a sample and filled shard by shard.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import atomic_path
from burrow.errors import BurrowError, first_line

log = logging.getLogger(__name__)


@dataclass
class IndexConfig:
    """How the FAISS index is chosen and searched."""

    factory: str | None = None  # FAISS index_factory string; None chooses by size (see choose_factory)
    search_params: str | None = None  # e.g. "efSearch=128" or "nprobe=64"; None uses the chosen default
    # chunks below which search is exact (Flat): at 100k exact search still runs 1,052 queries/s per thread and
    # HNSW32 (efSearch 128) only 1.5x that at recall@10 0.977 (bench/index_scaling.py, docs/scaling.md)
    exact_below: int = 200_000
    # chunks below which HNSW32 is used, above it OPQ+IVF-PQ re-ranked with SQ8 keys: HNSW32 holds 1,792 B per
    # key (7 GB at 4M) against 440 B, and the re-ranked IVF-PQ reaches recall@10 0.89 at 1M (docs/scaling.md)
    hnsw_below: int = 4_000_000
    train_sample: int = 200_000  # vectors used to train IVF/PQ indexes

    def __post_init__(self) -> None:
        if self.exact_below < 0 or self.hnsw_below < self.exact_below:
            raise BurrowError("index thresholds must satisfy 0 ≤ exact_below ≤ hnsw_below")


def choose_factory(n: int, dim: int, config: IndexConfig) -> tuple[str, str]:
    """(factory string, search parameters) for ``n`` keys of dimension ``dim``."""
    if config.factory:
        return config.factory, config.search_params or ""
    if n < config.exact_below:
        return "Flat", config.search_params or ""
    if n < config.hnsw_below:
        # bench/index_scaling.py (docs/scaling.md): HNSW32 at efSearch 128 keeps recall@10 ≥ 0.977 up to 100k keys.
        return "HNSW32", config.search_params or "efSearch=128"
    nlist = 1 << max(10, min(18, round(math.log2(4 * math.sqrt(n)))))
    pq = 48 if dim % 48 == 0 else 32
    # PQ codes alone cap recall@10 near 0.5-0.7 on MiniLM keys; re-ranking a 16·k shortlist with 8-bit
    # scalar-quantised keys (Refine(SQ8), d bytes per key) lifts it to 0.89 (1M) - 0.99 (67k) (docs/scaling.md).
    return f"OPQ{pq},IVF{nlist},PQ{pq},Refine(SQ8)", config.search_params or "nprobe=64,k_factor_rf=16"


def build_index(shards: Sequence[Path], dim: int, n: int, config: IndexConfig) -> tuple[Any, str, str]:
    """Build the index from embedding shards; returns (index, factory, search params)."""
    import faiss

    factory, params = choose_factory(n, dim, config)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
    except RuntimeError as e:
        raise BurrowError(f"bad FAISS factory string {factory!r}: {e}") from None
    if not index.is_trained:
        _quick_opq(index)
        sample = _training_sample(shards, config.train_sample)
        try:
            index.train(sample)
        except RuntimeError as e:  # e.g. IVF1024 on fewer than 1,024 chunks: FAISS's "nx >= k" assertion
            raise BurrowError(f"FAISS could not train the index {factory!r} on {len(sample):,} keys ("
                              f"{first_line(e)}); choose a smaller factory (fewer lists or centroids) or leave "
                              "--index out for one sized to the memory") from None
    for path in shards:
        index.add(np.ascontiguousarray(np.load(path), dtype=np.float32))
    set_search_params(index, params)
    return index, factory, params


def _quick_opq(index: Any) -> None:
    """OPQ with 5 outer iterations on ≤ 16k points: FAISS's defaults (25, 65k) take ~5 min here for the same
    recall; these are the settings bench/index_scaling.py measured."""
    import faiss

    base = faiss.downcast_index(index.base_index) if hasattr(index, "base_index") else index
    if isinstance(base, faiss.IndexPreTransform):
        vt = faiss.downcast_VectorTransform(base.chain.at(0))  # type: ignore[attr-defined]
        if isinstance(vt, faiss.OPQMatrix):
            vt.niter, vt.niter_pq_0, vt.max_train_points = 5, 10, 16_384


def _training_sample(shards: Sequence[Path], size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    parts = []
    per_shard = max(1, size // max(1, len(shards)))
    for path in shards:
        arr = np.load(path, mmap_mode="r")
        take = np.sort(rng.choice(len(arr), size=min(per_shard, len(arr)), replace=False))
        parts.append(np.asarray(arr[take], dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(parts))


def set_search_params(index: Any, params: str) -> None:
    """Apply FAISS search parameters such as ``efSearch=128,nprobe=32``."""
    import faiss

    if params:
        try:
            faiss.ParameterSpace().set_index_parameters(index, params)  # type: ignore[arg-type]
        except RuntimeError as e:
            raise BurrowError(f"bad FAISS search parameters {params!r}: {e}") from None


def save_index(index: Any, path: Path) -> None:
    """Write the index atomically."""
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_index(path: Path, params: str = "") -> Any:
    """Read an index (memory-mapped where FAISS allows) and apply search parameters."""
    import faiss

    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        index = faiss.read_index(str(path))
    set_search_params(index, params)
    return index


@contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads inside the block (None: as it is).

    One query (a generation step) searches 2× faster on one thread on a 2-core CPU: FAISS brings its
    own OpenMP runtime, whose second thread competes with torch's, still spinning after its last op.
    """
    if n is None:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def list_order(index: Any, queries: np.ndarray) -> np.ndarray | None:
    """For a plain IVF index (the kNN-LM's; a memory's own ``IVF…`` factory), the queries' order grouped
    by their nearest list; else None.

    IVF search visits each query's ``nprobe`` lists; queries searched next to others that share their
    lists find those lists still in cache (measured: 1.33× faster on 40k of the demo's kNN-LM queries).
    A query's search does not depend on its neighbours in the batch, so the results are the same (all
    316k kNN-LM queries of the demo: identical scores); FAISS computes coarse distances by BLAS from
    20 queries up, so a near-tie between two lists could in principle fall the other way in a small
    batch. The coarse quantizer runs twice (here and in the search): ~1 s per 100k queries.
    """
    import faiss

    ivf = faiss.downcast_index(index)
    if not isinstance(ivf, faiss.IndexIVF):
        return None
    _, lists = ivf.quantizer.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return np.argsort(lists[:, 0], kind="stable")


def search(index: Any, queries: np.ndarray, k: int, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Batched k-NN search: (distances (q, k) float32 squared L2, ids (q, k) int64; -1 where none)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k_eff = max(1, min(k, int(index.ntotal)))
    dists = np.full((len(q), k), np.inf, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    with faiss_threads(1 if len(q) == 1 else None):
        for s in range(0, len(q), batch):
            d, i = index.search(q[s : s + batch], k_eff)
            dists[s : s + batch, :k_eff] = d
            ids[s : s + batch, :k_eff] = i
    return dists, ids
