"""Index scaling: recall@10 against exact search and queries/s for Flat, HNSW32 and OPQ+IVF-PQ.

Keys: the real MiniLM keys of a built memory (its ``embeddings/`` shards) as far as they go; beyond that,
keys drawn from a model fitted to them (``KeyModel``): a Gaussian mixture whose means are k-means centroids
of the real keys and whose covariances are each component's own, shrunk half-way to the pooled
within-component covariance; every sample is projected onto the unit sphere, as the encoder's Normalize
layer does to the real keys. ``--size real-vs-synthetic`` compares the two at the real size.

recall@10 = |approximate top-10 ∩ exact top-10| / 10, averaged over held-out queries (real keys left out
of the database, or fresh samples of the model). queries/s: one batch of all queries on ONE thread (exact
search included), so numbers do not depend on what else the machine runs on its second core; builds use
every thread.

    flock /tmp/burrow-heavy.lock python bench/index_scaling.py --size real-vs-synthetic
    flock /tmp/burrow-heavy.lock python bench/index_scaling.py --size 100k
    flock /tmp/burrow-heavy.lock python bench/index_scaling.py --size 1M
    flock /tmp/burrow-heavy.lock python bench/index_scaling.py --size 10M --indexes ivfpq
    python bench/index_scaling.py --report       # table (Markdown) + docs/index_scaling.png

Each run appends its rows to bench/results/index_scaling.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

RESULTS = Path(__file__).parent / "results" / "index_scaling.jsonl"
PLOT = Path(__file__).parent.parent / "docs" / "index_scaling.png"
SIZES = {"20k": 20_000, "100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
TRAIN = 100_000  # training sample of the IVF-PQ (its PQ uses ≤ 65,536 of them)
BLOCK = 250_000  # keys generated, searched and added at a time (10M × 384 fp32 would be 15 GB)


def real_keys(memory: Path) -> np.ndarray:
    """(n, e) float32 keys of a memory, read from its key shards in chunk order."""
    m = json.loads((memory / "embeddings.manifest.json").read_text())
    return np.concatenate([np.load(memory / "embeddings" / s) for s in m["shards"]]).astype(np.float32)


class KeyModel:
    """A Gaussian mixture fitted to real keys; samples are normalised to unit length like the real keys."""

    def __init__(self, keys: np.ndarray, components: int = 64, shrink: float = 0.5, seed: int = 0):
        d = keys.shape[1]
        km = faiss.Kmeans(d, components, niter=25, seed=seed, verbose=False)
        km.train(keys)
        _, assign = km.index.search(keys, 1)
        assign = assign[:, 0]
        self.means = km.centroids.astype(np.float64)  # (c, e)
        resid = keys - km.centroids[assign]
        pooled = resid.T.astype(np.float64) @ resid / len(keys)  # (e, e)
        self.weights = np.bincount(assign, minlength=components) / len(keys)
        self.chol = np.empty((components, d, d))
        for c in range(components):
            r = resid[assign == c].astype(np.float64)
            own = r.T @ r / max(1, len(r)) if len(r) > 1 else pooled
            cov = (1 - shrink) * own + shrink * pooled + 1e-6 * np.eye(d)
            self.chol[c] = np.linalg.cholesky(cov)

    def sample(self, n: int, seed: int) -> np.ndarray:
        """(n, e) float32 unit-length keys; the same seed gives the same keys."""
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, self.means.shape[1]), dtype=np.float32)
        for c in np.unique(comp):
            rows = np.flatnonzero(comp == c)
            z = rng.standard_normal((len(rows), self.means.shape[1]))
            out[rows] = self.means[c] + z @ self.chol[c].T
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def blocks(model: KeyModel, n: int, seed: int) -> Iterator[np.ndarray]:
    """The n database keys of size ``n``, block by block (regenerated identically on every call)."""
    for b, start in enumerate(range(0, n, BLOCK)):
        yield model.sample(min(BLOCK, n - start), seed=seed * 1000 + b)


def exact_topk(queries: np.ndarray, db: Iterator[np.ndarray], k: int) -> tuple[np.ndarray, float]:
    """Exact top-k ids over the blocks (merged block by block) and the single-thread search seconds."""
    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    offset, seconds = 0, 0.0
    for x in db:
        faiss.omp_set_num_threads(1)
        t0 = time.perf_counter()
        d, i = faiss.knn(queries, x, k)
        seconds += time.perf_counter() - t0
        faiss.omp_set_num_threads(_threads())
        d_all = np.concatenate([best_d, d], 1)
        i_all = np.concatenate([best_i, i + offset], 1)
        order = np.argsort(d_all, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d_all, order, 1), np.take_along_axis(i_all, order, 1)
        offset += len(x)
    return best_i, seconds


def _threads() -> int:
    import os

    return os.cpu_count() or 1


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean |found[:k] ∩ truth[:k]| / k."""
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)]))


def timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Ids and single-thread queries/s of one batched search."""
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    qps = len(queries) / (time.perf_counter() - t0)
    faiss.omp_set_num_threads(_threads())
    return ids, qps


def measure(name: str, n: int, source: str, queries: np.ndarray, truth: np.ndarray,
            db: callable, indexes: list[str], nlist: int) -> list[dict]:  # type: ignore[valid-type]
    """Build each index over ``db()`` and record recall@10 / queries/s for each search setting."""
    rows: list[dict] = []
    d = queries.shape[1]

    def row(index: str, params: str, ids: np.ndarray, qps: float, build_s: float, bytes_per_key: float) -> None:
        r = dict(size=name, n=n, source=source, index=index, params=params, recall10=round(recall_at(ids, truth), 4),
                 qps=round(qps, 1), build_s=round(build_s, 1), bytes_per_key=round(bytes_per_key, 1),
                 queries=len(queries))
        print(json.dumps(r), flush=True)
        rows.append(r)
        _append(r)

    if "hnsw" in indexes:
        t0 = time.perf_counter()
        hnsw = faiss.index_factory(d, "HNSW32")
        for x in db():
            hnsw.add(x)
        build = time.perf_counter() - t0
        for ef in (32, 64, 128, 256):
            hnsw.hnsw.efSearch = ef
            ids, qps = timed_search(hnsw, queries, 10)
            row("HNSW32", f"efSearch={ef}", ids, qps, build, 4 * d + 2 * 32 * 4)
        del hnsw
    if "ivfpq" in indexes:
        factory = f"OPQ48,IVF{nlist},PQ48"
        t0 = time.perf_counter()
        base = faiss.index_factory(d, factory)
        opq = faiss.downcast_VectorTransform(faiss.downcast_index(base).chain.at(0))
        # OPQ's defaults (25 outer and 40 first PQ iterations, 65k points) take many minutes here
        opq.niter, opq.niter_pq_0, opq.max_train_points = 5, 10, 16_384
        first = next(iter(db()))
        train = first[np.random.default_rng(1).choice(len(first), min(len(first), TRAIN), replace=False)]
        base.train(train)
        train_s = time.perf_counter() - t0
        refine8 = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit)
        refine8.train(train)
        refine16 = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16) if n <= 2_000_000 else None
        for x in db():
            base.add(x)
            refine8.add(x)
            if refine16 is not None:
                refine16.add(x)
        build = time.perf_counter() - t0
        ivf = faiss.extract_index_ivf(base)
        for nprobe in (8, 16, 32, 64, 128):
            ivf.nprobe = nprobe
            ids, qps = timed_search(base, queries, 10)
            row(factory, f"nprobe={nprobe}", ids, qps, build, 48 + 8)
            for label, refine in (("SQ8", refine8), ("SQfp16", refine16)):
                if refine is None:
                    continue
                wrapped = faiss.IndexRefine(base, refine)
                for kf in (4, 16):
                    wrapped.k_factor = kf
                    ids, qps = timed_search(wrapped, queries, 10)
                    row(f"{factory},Refine({label})", f"nprobe={nprobe},k_factor_rf={kf}", ids, qps, build,
                        48 + 8 + (d if label == "SQ8" else 2 * d))
        print(json.dumps({"size": name, "train_s": round(train_s, 1), "build_s": round(build, 1)}), flush=True)
    return rows


def run(args: argparse.Namespace) -> None:
    faiss.omp_set_num_threads(_threads())
    real = real_keys(Path(args.memory))
    rng = np.random.default_rng(0)
    held = rng.choice(len(real), args.queries, replace=False)
    mask = np.ones(len(real), bool)
    mask[held] = False
    real_q, real_db = real[held], real[mask]
    t0 = time.perf_counter()
    model = KeyModel(real_db)
    print(json.dumps({"model_fit_s": round(time.perf_counter() - t0, 1), "real_keys": len(real_db)}), flush=True)
    indexes = args.indexes.split(",")
    rows = []
    if args.size == "real-vs-synthetic":
        n = len(real_db)
        for source, q, db in (("real", real_q, lambda: iter([real_db])),
                              ("synthetic", model.sample(args.queries, seed=999), lambda: blocks(model, n, 7))):
            truth, exact_s = exact_topk(q, db(), 10)
            rows.append(dict(size=f"{n // 1000}k", n=n, source=source, index="Flat", params="", recall10=1.0,
                             qps=round(len(q) / exact_s, 1), build_s=0.0, bytes_per_key=4 * q.shape[1],
                             queries=len(q)))
            print(json.dumps(rows[-1]), flush=True)
            _append(rows[-1])
            rows += measure(f"{n // 1000}k", n, source, q, truth, db, indexes, nlist=1024)
    else:
        n = SIZES[args.size]
        q = model.sample(args.queries, seed=999)
        truth, exact_s = exact_topk(q, blocks(model, n, 7), 10)
        rows.append(dict(size=args.size, n=n, source="synthetic", index="Flat", params="", recall10=1.0,
                         qps=round(len(q) / exact_s, 1), build_s=0.0, bytes_per_key=4 * q.shape[1], queries=len(q)))
        print(json.dumps(rows[-1]), flush=True)
        _append(rows[-1])
        nlist = args.nlist or (1024 if n <= 200_000 else 4096)
        rows += measure(args.size, n, "synthetic", q, truth, lambda: blocks(model, n, 7), indexes, nlist)


def _append(row: dict) -> None:
    """Rows are kept as they are measured: a run cut short keeps what it measured."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")


def report(brief: bool = False) -> None:
    """Print the Markdown table (best setting per index reaching recall ≥ 0.9, and the fastest) and plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    latest: dict[tuple, dict] = {}
    for r in rows:  # a re-run replaces its earlier rows
        latest[(r["size"], r["source"], r["index"], r["params"])] = r
    rows = list(latest.values())
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["n"], r["source"], r["size"]), []).append(r)
    if brief:  # the settings docs/scaling.md shows: every index's default, and the re-rank sweep
        keep = {("HNSW32", "efSearch=64"), ("HNSW32", "efSearch=128"), ("HNSW32", "efSearch=256")}
        rows = [r for r in rows if r["index"] == "Flat" or (r["index"], r["params"]) in keep
                or (r["index"].endswith("PQ48") and r["params"] in ("nprobe=64",))
                or (r["index"].endswith("Refine(SQ8)") and r["params"].endswith("k_factor_rf=16"))]
        groups = {}
        for r in rows:
            groups.setdefault((r["n"], r["source"], r["size"]), []).append(r)
    print("| keys | source | index | setting | recall@10 | queries/s (1 thread) | × exact | build s | bytes/key |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (_n, source, size), rs in sorted(groups.items()):
        exact = next((r["qps"] for r in rs if r["index"] == "Flat"), float("nan"))
        for r in sorted(rs, key=lambda r: (r["index"], -r["recall10"])):
            print(f"| {size} | {source} | {r['index']} | {r['params']} | {r['recall10']:.3f} | {r['qps']:,.0f} | "
                  f"{r['qps'] / exact:.1f} | {r['build_s']:.0f} | {r['bytes_per_key']:.0f} |")
    if brief:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, ((_n, source, size), rs) in zip(axes[0], sorted(groups.items()), strict=True):
        for idx in sorted({r["index"] for r in rs}):
            pts = sorted((r["recall10"], r["qps"]) for r in rs if r["index"] == idx)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 1 else "s", label=idx, ms=3)
        ax.set_xscale("linear")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/s (1 thread)")
        ax.set_title(f"{size} {source} keys")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    print(f"\nplot: {PLOT}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--memory", default="/work/main/runs/demo/memory", help="memory whose key shards are the real keys")
    p.add_argument("--size", choices=["real-vs-synthetic", *SIZES], default="100k")
    p.add_argument("--indexes", default="hnsw,ivfpq", help="comma list of hnsw, ivfpq (Flat is always measured)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (default 1024 up to 200k keys, else 4096)")
    p.add_argument("--report", action="store_true", help="print the table and write the plot, then stop")
    p.add_argument("--brief", action="store_true", help="with --report: only the settings docs/scaling.md shows")
    args = p.parse_args()
    if args.report:
        report(args.brief)
    else:
        run(args)


if __name__ == "__main__":
    main()
