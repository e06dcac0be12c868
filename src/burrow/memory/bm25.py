"""BM25: a second, lexical retriever over a memory's chunks (the ``bm25s`` library).

Shape legend: q queries, k neighbours, m chunk length, r = 2m retrieved tokens.

Each memory chunk is indexed as the text its m tokens decode to (the same text the dense keys are
made from), lower-cased, split on word characters, English stopwords removed, no stemming. A
search returns the same :class:`~burrow.memory.memory.SearchResult` as the dense index; its
``distances`` are the *negated* BM25 scores, so smaller is nearer in both. A chunk sharing no term
with the query (score 0) is not a neighbour: its slot is -1 / inf, as a missing dense neighbour.

``MEMDIR/bm25/`` holds the ``bm25s`` files and ``bm25.manifest.json`` (format version, the hash of
the chunk table and tokens it indexes, n_chunks). The folder is built in a temporary directory and
moved into place with ``os.replace``, so it is either complete or absent; a memory whose chunks
changed since makes the index stale, and a stale or missing index is one clear error.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from burrow.artefacts import (
    atomic_dir,
    config_hash,
    damaged,
    file_as_recorded,
    read_json,
    read_manifest,
    write_manifest,
)
from burrow.errors import BurrowError
from burrow.memory.checks import check_k, check_queries

if TYPE_CHECKING:
    from burrow.memory.memory import Memory, SearchResult

log = logging.getLogger(__name__)

BM25_DIR = "bm25"
RETRIEVERS = ("dense", "bm25")
#: BM25 parameters and text analysis; part of the inputs hash, so changing them rebuilds the index.
PARAMS: dict[str, Any] = {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "en", "lower": True,
                          "stemmer": None, "token_pattern": r"(?u)\b\w\w+\b"}
_DECODE_BLOCK = 4096  # chunks decoded per progress step


@dataclass
class BM25Index:
    """A loaded BM25 index: the ``bm25s`` retriever and its manifest."""

    retriever: Any  # bm25s.BM25
    manifest: dict[str, Any]

    @property
    def n_chunks(self) -> int:
        """Chunks indexed (= the memory's chunks)."""
        return int(self.manifest["n_chunks"])

    def search(self, texts: list[str], k: int, exclude_docs: np.ndarray | None,
               chunk_docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores (q, k) float32, ids (q, k) int64) best first; -1 / 0 where no chunk shares a term.

        ``exclude_docs`` (q,) drops chunks whose document equals the query's (-1 excludes nothing).
        """
        n = self.n_chunks
        if not texts or n == 0:
            return np.zeros((len(texts), k), np.float32), np.full((len(texts), k), -1, np.int64)
        query_terms = _analyse(texts)
        width = min(k if exclude_docs is None else k + 16, n)
        ids, scores = self._retrieve(query_terms, width)
        out_s, out_i, short = _keep(ids, scores, k, exclude_docs, chunk_docs)
        # chunks outside each query's document: a row holding them all is complete, however short of k
        others = np.full(len(texts), n, dtype=np.int64)
        if exclude_docs is not None:
            per_doc = np.bincount(chunk_docs, minlength=int(exclude_docs.max()) + 1)
            others -= np.where(exclude_docs >= 0, per_doc[np.maximum(exclude_docs, 0)], 0)
        # Rows left short whose last hit still scored > 0 may have more matching chunks further down.
        rows = np.flatnonzero(short & (scores[:, -1] > 0) & ((out_i >= 0).sum(axis=1) < others))
        while len(rows) and width < n:
            width = min(width * 4, n)
            sub_docs = None if exclude_docs is None else exclude_docs[rows]
            ids2, scores2 = self._retrieve([query_terms[r] for r in rows], width)
            s2, i2, short2 = _keep(ids2, scores2, k, sub_docs, chunk_docs)
            out_s[rows], out_i[rows] = s2, i2
            rows = rows[short2 & (scores2[:, -1] > 0) & ((i2 >= 0).sum(axis=1) < others[rows])]
        return out_s, out_i

    def _retrieve(self, terms: list[list[str]], width: int) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = self.retriever.retrieve(terms, k=width, show_progress=False, n_threads=0)
        return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)  # (q, width) each


def _bm25s() -> Any:
    """The ``bm25s`` module, its log lines below WARNING silenced: it sets its own logger to DEBUG, so each
    query of stopwords alone printed "The query is empty. ..." whatever the caller's logging level."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _analyse(texts: list[str]) -> list[list[str]]:
    """Terms of each text: the analysis the index was built with."""
    bm25s = _bm25s()
    out: list[list[str]] = bm25s.tokenize(texts, lower=PARAMS["lower"], stopwords=PARAMS["stopwords"],
                                          token_pattern=PARAMS["token_pattern"], return_ids=False,
                                          show_progress=False)
    return out


def _keep(ids: np.ndarray, scores: np.ndarray, k: int, qdocs: np.ndarray | None,
          chunk_docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop zero-score and same-document hits, keep the first k in score order; flag rows left short."""
    bad = scores <= 0
    if qdocs is not None:
        bad |= chunk_docs[ids] == np.asarray(qdocs)[:, None]
    order = np.argsort(bad, axis=1, kind="stable")[:, :k]  # good hits first, score order kept
    s = np.take_along_axis(scores, order, 1)
    i = np.take_along_axis(ids, order, 1)
    kept_bad = np.take_along_axis(bad, order, 1)
    s[kept_bad], i[kept_bad] = 0.0, -1
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)))
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        kept_bad = np.pad(kept_bad, ((0, 0), (0, pad)), constant_values=True)
    return s, i, np.asarray(kept_bad.any(axis=1))


def bm25_inputs(memory: Memory) -> str:
    """Hash of what a BM25 index of ``memory`` is built from: its chunk table, tokens and tokenizer."""
    chunks = read_json(memory.dir / "chunks.manifest.json")
    return config_hash({"chunks": chunks.get("inputs"), "n_chunks": chunks.get("n_chunks"),
                        "tokens": memory.store.manifest.get("inputs"), "tokenizer": memory.manifest["tokenizer"],
                        "params": PARAMS})


def damaged_file(directory: Path, manifest: dict[str, Any]) -> Path | None:
    """The first index file in ``directory`` that is missing or not of the size its manifest recorded, else
    None (a manifest from before sizes were recorded trusts its files)."""
    for name, record in (manifest.get("files") or {}).items():
        if not file_as_recorded(directory / name, record):
            return directory / name
    return None


def bm25_status(memory: Memory) -> dict[str, Any] | None:
    """The BM25 manifest with ``up_to_date`` added (the memory's chunks unchanged since and the index files
    as written), or ``None`` when the memory has no BM25 index."""
    directory = memory.dir / BM25_DIR
    manifest = read_manifest(directory, "bm25")
    if manifest is None:
        return None
    fresh = manifest.get("inputs") == bm25_inputs(memory) and damaged_file(directory, manifest) is None
    return {**manifest, "up_to_date": fresh}


def chunk_texts(memory: Memory, progress: bool = False) -> list[str]:
    """The decoded text of every memory chunk (its m tokens), in chunk-id order."""
    n = len(memory)
    out: list[str] = []
    bar = tqdm(total=n, unit="chunk", desc="bm25 decode", disable=not progress, unit_scale=True)
    for a in range(0, n, _DECODE_BLOCK):
        ids = np.arange(a, min(a + _DECODE_BLOCK, n))
        out.extend(memory.tokenizer.decode_batch(memory.chunk_tokens(ids).tolist()))
        bar.update(len(ids))
    bar.close()
    return out


def build_bm25(memory: Memory, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Index ``memory``'s chunks with BM25 into ``MEMDIR/bm25/``; skipped when up to date (the same chunks,
    every index file of the size written) unless ``force``, which also replaces a damaged manifest.

    Returns the index's manifest. The new index is written to a temporary folder (manifest last)
    and moved into place, so a killed build leaves the previous index or none, never half of one.
    """
    bm25s = _bm25s()
    out = memory.dir / BM25_DIR
    current = None if force else bm25_status(memory)
    if current is not None and current.pop("up_to_date"):
        log.info("BM25 index of %s is up to date (%d chunks)", memory.dir, current["n_chunks"])
        return current
    inputs = bm25_inputs(memory)
    t0 = time.perf_counter()
    texts = chunk_texts(memory, progress)
    terms = bm25s.tokenize(texts, lower=PARAMS["lower"], stopwords=PARAMS["stopwords"],
                           token_pattern=PARAMS["token_pattern"], show_progress=progress)
    retriever = bm25s.BM25(k1=PARAMS["k1"], b=PARAMS["b"], method=PARAMS["method"])
    retriever.index(terms, show_progress=progress)
    with atomic_dir(out) as tmp:
        retriever.save(str(tmp), show_progress=False)
        files = {p.name: {"bytes": p.stat().st_size} for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = write_manifest(tmp, "bm25", inputs=inputs, n_chunks=len(texts), params=PARAMS, files=files,
                                  vocab_size=len(retriever.vocab_dict), seconds=round(time.perf_counter() - t0, 2),
                                  distances="negated BM25 score (smaller is nearer); score 0 is no neighbour")
    _LOADED.pop(memory, None)
    log.info("BM25 index of %s: %d chunks, %d terms, %.1f s", memory.dir, len(texts),
             manifest["vocab_size"], manifest["seconds"])
    return manifest


_LOADED: weakref.WeakKeyDictionary[Memory, BM25Index] = weakref.WeakKeyDictionary()


def load_bm25(memory: Memory) -> BM25Index:
    """The memory's BM25 index; a missing or stale one is a :class:`BurrowError` naming the fix."""
    bm25s = _bm25s()
    inputs = bm25_inputs(memory)
    cached = _LOADED.get(memory)
    if cached is not None and cached.manifest.get("inputs") == inputs:
        return cached
    directory = memory.dir / BM25_DIR
    manifest = read_manifest(directory, "bm25")
    if manifest is None:
        raise BurrowError(f"memory {memory.dir} has no BM25 index; run `burrow memory bm25 {memory.dir}`")
    if manifest.get("inputs") != inputs:
        raise BurrowError(f"memory {memory.dir} has no up-to-date BM25 index (its chunks changed since); "
                          f"run `burrow memory bm25 {memory.dir}`")
    fix = f"rebuild it: burrow memory bm25 {memory.dir} --force"
    bad = damaged_file(directory, manifest)
    if bad is not None:
        raise BurrowError(f"{bad} is {'damaged' if bad.exists() else 'missing'}; {fix}")
    with damaged(directory, fix):
        try:
            retriever = bm25s.BM25.load(str(directory), show_progress=False)
        except FileNotFoundError as e:  # an index from before file sizes were recorded: name the file
            raise BurrowError(f"{e.filename or directory} is missing; {fix}") from None
    index = BM25Index(retriever, manifest)
    _LOADED[memory] = index
    return index


def search_bm25(memory: Memory, queries: list[str] | np.ndarray, k: int = 2,
                exclude_docs: np.ndarray | None = None, with_text: bool = True) -> SearchResult:
    """Memory.search with BM25: queries are texts or token chunks (q, ≤m) decoded with the memory's tokenizer.

    ``distances`` are negated BM25 scores (smaller is nearer); -1 / inf where fewer than k chunks match.
    """
    queries, k = check_queries(queries), check_k(k)
    texts = memory.tokenizer.decode_batch(queries.tolist()) if isinstance(queries, np.ndarray) else queries
    docs = None if exclude_docs is None else np.asarray(exclude_docs, dtype=np.int64)
    scores, ids = load_bm25(memory).search(texts, k, docs, memory.chunks.docs)
    dists = np.where(ids < 0, np.inf, -scores).astype(np.float32)  # (q, k)
    return memory.result(ids, dists, with_text=with_text)


def retriever_agreement(memory: Memory, k: int = 10, sample: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Recall@k of each retriever against the other, the memory's own chunks as queries.

    ``sample`` chunks (seeded) query both retrievers with the same text (the chunk decoded), each
    with same-document exclusion. ``bm25_recall_of_dense`` is the share of dense top-k chunks that
    BM25's top-k also holds; ``dense_recall_of_bm25`` the reverse (they differ only where a
    retriever returns fewer than k).
    """
    if k < 1 or sample < 1:
        raise BurrowError("retriever_agreement needs k >= 1 and sample >= 1")
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(len(memory), size=min(sample, len(memory)), replace=False))
    queries = memory.chunk_tokens(ids)  # (q, m)
    exclude = memory.chunks.docs[ids].astype(np.int64)
    dense = memory.search(queries, k=k, exclude_docs=exclude, with_text=False).ids
    lexical = search_bm25(memory, queries, k=k, exclude_docs=exclude, with_text=False).ids
    hits = np.array([len(set(a[a >= 0]) & set(b[b >= 0])) for a, b in zip(dense, lexical, strict=True)])
    n_dense, n_bm25 = (dense >= 0).sum(), (lexical >= 0).sum()
    return {
        "k": k, "queries": len(ids), "seed": seed,
        "bm25_recall_of_dense": float(hits.sum() / max(n_dense, 1)),
        "dense_recall_of_bm25": float(hits.sum() / max(n_bm25, 1)),
        "top1_agreement": float(np.mean((dense[:, 0] == lexical[:, 0]) & (dense[:, 0] >= 0))),
        "bm25_missing": float(1 - n_bm25 / dense.size), "dense_missing": float(1 - n_dense / dense.size),
    }
