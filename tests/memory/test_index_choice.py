"""The index chosen by size (thresholds from bench/index_scaling.py), and the re-ranked IVF-PQ it builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from burrow.memory.index import IndexConfig, build_index, choose_factory, search


def test_choice_by_size() -> None:
    cfg = IndexConfig()
    assert choose_factory(cfg.exact_below - 1, 384, cfg)[0] == "Flat"
    assert choose_factory(cfg.exact_below, 384, cfg)[0] == "HNSW32"
    factory, params = choose_factory(cfg.hnsw_below, 384, cfg)
    assert factory.startswith("OPQ48,IVF") and factory.endswith(",PQ48,Refine(SQ8)") and "k_factor_rf" in params


def test_reranked_ivfpq_recall_on_clustered_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((32, 48)).astype(np.float32)
    x = centres[rng.integers(0, 32, 3000)] + 0.3 * rng.standard_normal((3000, 48)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    paths = []
    for i, part in enumerate(np.split(x, 3)):  # filled shard by shard
        paths.append(tmp_path / f"shard_{i}.npy")
        np.save(paths[-1], part)
    cfg = IndexConfig(factory="IVF32,PQ8x4,Refine(SQ8)", search_params="nprobe=8,k_factor_rf=16")
    index, _, _ = build_index(paths, 48, len(x), cfg)
    q = x[:200] + 0.05 * rng.standard_normal((200, 48)).astype(np.float32)
    exact = np.argsort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :10]
    _, ids = search(index, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
    assert index.ntotal == len(x) and recall > 0.9


def test_one_query_searches_on_one_thread_and_restores_the_count() -> None:
    """A single query (a generation step) runs FAISS on one thread; the thread count is restored after it."""
    import faiss

    from burrow.memory import index as index_mod

    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    flat = faiss.IndexFlatL2(16)
    flat.add(x)
    seen = []

    class Spy:
        ntotal = flat.ntotal

        def search(self, q, k):
            seen.append((len(q), faiss.omp_get_max_threads()))
            return flat.search(q, k)

    faiss.omp_set_num_threads(2)
    d1, i1 = index_mod.search(Spy(), x[:1], 3)
    index_mod.search(Spy(), x[:4], 3)
    assert seen == [(1, 1), (4, 2)] and faiss.omp_get_max_threads() == 2
    assert i1[0, 0] == 0 and d1[0, 0] == 0
