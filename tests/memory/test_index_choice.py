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
