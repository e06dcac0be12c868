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


def test_ivf_queries_are_searched_grouped_by_list_with_the_same_results(monkeypatch) -> None:
    """search_excluding groups an IVF's queries by their nearest list (cache reuse) and returns every
    row in the caller's order, identical to searching them as given; same-document exclusion follows."""
    import faiss

    from burrow.memory.index import list_order
    from burrow.memory.neighbours import search_excluding

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(4000, 16)).astype(np.float32)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(16), 16, 32)
    index.train(keys)
    index.add(keys)
    index.nprobe = 4
    queries = keys[rng.permutation(4000)[:3000]] + rng.normal(scale=0.1, size=(3000, 16)).astype(np.float32)
    query_docs = rng.integers(0, 50, size=3000)
    chunk_docs = rng.integers(0, 50, size=4000)
    order = list_order(index, queries)
    assert order is not None and not np.array_equal(order, np.arange(3000))
    assert list_order(faiss.IndexFlatL2(16), queries) is None
    import burrow.memory.neighbours as neighbours

    used = []
    monkeypatch.setattr(neighbours, "list_order", lambda idx, q: used.append(len(q)) or list_order(idx, q))
    grouped = search_excluding(index, queries, 5, query_docs, chunk_docs, batch=256)  # sorted, 12 blocks
    assert used == [3000]
    as_given = search_excluding(index, queries, 5, query_docs, chunk_docs, batch=4096)  # one block, no sort
    assert np.array_equal(grouped[1], as_given[1]) and np.array_equal(grouped[0], as_given[0])
    assert (chunk_docs[grouped[1]] != query_docs[:, None]).all()
