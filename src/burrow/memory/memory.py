"""Open a memory directory and search it: the one retrieval API of burrow.

Shape legend: q queries, k neighbours, m chunk length, r = 2m retrieved tokens ([chunk, continuation]),
e key width, c memory chunks.

Every stage retrieves through :class:`Memory`: :meth:`Memory.encode_tokens` turns token chunks into
keys, :meth:`Memory.search_keys` finds their neighbours (same-document exclusion, or an exact search
among a subset of chunks), :meth:`Memory.search` does both for texts or token chunks and adds the
retrieved tokens, text and provenance. Training's precomputed neighbour tables
(:meth:`Memory.neighbour_table`), evaluation, its sweeps, generation and serving all call these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from burrow.artefacts import (
    damaged,
    file_as_recorded,
    read_json,
    read_manifest,
    require_manifest,
    require_model_path,
)
from burrow.data.layout import retrieved_length
from burrow.data.tokenizer import Tokenizer, load_tokenizer
from burrow.data.tokens import TokenStore
from burrow.defaults import DEFAULT_K
from burrow.errors import BurrowError
from burrow.memory.bm25 import RETRIEVERS, bm25_status, search_bm25
from burrow.memory.checks import check_directory, check_ids, check_k, check_queries
from burrow.memory.chunks import ChunkTable, chunk_tokens, neighbour_values
from burrow.memory.config import EncoderConfig
from burrow.memory.index import load_index, search
from burrow.memory.keys import shard_problem, stored_keys
from burrow.memory.neighbours import neighbour_table_paths, search_excluding

if TYPE_CHECKING:
    from burrow.memory.encode import FrozenEncoder

log = logging.getLogger(__name__)

ENCODE_BLOCK = 2048  # query chunks encoded per call (progress granularity of long query sets)


class ModelShape(Protocol):
    """What a memory needs to know of a model config (:class:`burrow.model.ModelConfig` has it)."""

    retro: bool
    chunk_size: int
    retrieved_len: int


@dataclass
class SearchResult:
    """Neighbours of q queries: ids, distances (smaller is nearer), retrieved tokens, text and provenance."""

    ids: np.ndarray  # (q, k) int64 memory chunk ids, -1 where fewer than k exist
    distances: np.ndarray  # (q, k) float32 squared L2 (dense) or negated BM25 score (bm25); inf where missing
    tokens: np.ndarray  # (q, k, r) int64 [chunk, continuation], padded with the pad id
    # Per neighbour; "" where it is missing (id -1):
    texts: list[list[str]] = field(default_factory=list)  # decoded [chunk, continuation] per neighbour
    chunk_texts: list[list[str]] = field(default_factory=list)  # decoded chunk alone
    sources: list[list[str]] = field(default_factory=list)  # document title, else "file:line N" under the corpus root
    doc_ids: list[list[str]] = field(default_factory=list)  # document ids
    offsets: np.ndarray | None = None  # (q, k) token offset of each chunk inside its document; -1 where missing

    def to_json(self) -> list[list[dict[str, Any]]]:
        """Per query, per neighbour: a JSON-ready record."""
        out = []
        for qi in range(len(self.ids)):
            row = []
            for j in range(self.ids.shape[1]):
                if self.ids[qi, j] < 0:
                    continue
                row.append({
                    "rank": j + 1, "chunk_id": int(self.ids[qi, j]), "distance": float(self.distances[qi, j]),
                    "source": self.sources[qi][j], "doc_id": self.doc_ids[qi][j],
                    "offset": int(self.offsets[qi, j]) if self.offsets is not None else None,
                    "chunk": self.chunk_texts[qi][j], "text": self.texts[qi][j],
                })
            out.append(row)
        return out


class Memory:
    """A built memory directory: tokenizer, token store, chunks, keys index, neighbour tables."""

    def __init__(self, directory: str | Path, encoder: FrozenEncoder | None = None):
        check_directory(directory)
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise BurrowError(f"{self.dir} is not a memory directory (build one with `burrow memory build`)")
        self.manifest = require_manifest(self.dir, "memory")
        self._encoder = encoder
        self._checked_encoder: FrozenEncoder | None = None
        self._check_keys()

    def _check_keys(self) -> None:
        """A memory that keeps its key shards must hold every one, as written (count, sizes, shapes)."""
        if not self.manifest.get("config", {}).get("keep_embeddings", True):
            return
        problem = shard_problem(self.dir / "embeddings", require_manifest(self.dir, "embeddings"))
        if problem is not None:
            raise BurrowError(f"memory {self.dir}: {problem}; re-run the `burrow memory build` command that made "
                              "it: it re-encodes only the missing keys")

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The memory's tokenizer; queries and training data must use it."""
        path = self.dir / self.manifest["tokenizer_file"]
        fix = "re-run the `burrow memory build` command that made it (it trains the tokenizer again)"
        if not path.exists():
            raise BurrowError(f"memory {self.dir}: its tokenizer {path.name} is missing; {fix}")
        try:
            tok = load_tokenizer(str(path))
        except BurrowError as e:
            raise BurrowError(f"memory {self.dir}: {e}; {fix}") from None
        if tok.fingerprint() != self.manifest["tokenizer"]:
            raise BurrowError(f"{self.dir}: tokenizer file does not match the manifest; rebuild with --force")
        recorded = read_manifest(self.dir, "tokenizer") or {}
        if recorded.get("pad_id") is not None and int(recorded["pad_id"]) != tok.pad_id:  # the same file, read
            # otherwise by this burrow (an end token it now recognises): chunks were padded with the recorded id
            raise BurrowError(f"memory {self.dir} pads with id {recorded['pad_id']}, but this burrow reads its "
                              f"tokenizer's pad as id {tok.pad_id}; rebuild the memory with `burrow memory build "
                              "... --force` (and retrain the runs made from it)")
        return tok

    @cached_property
    def store(self) -> TokenStore:
        """The memory's token store."""
        return TokenStore(self.dir / "tokens")

    @cached_property
    def display_sources(self) -> list[str]:
        """Per document, its source as shown to users: title, else path relative to the corpus root."""
        from burrow.memory.sources import display_sources

        return display_sources(self.store, self.manifest)

    @cached_property
    def chunks(self) -> ChunkTable:
        """The chunk table."""
        require_manifest(self.dir, "chunks")
        with damaged(self.dir / "chunks.npz"):
            return ChunkTable.load(self.dir / "chunks.npz")

    @property
    def chunk_size(self) -> int:
        """m, tokens per chunk."""
        return int(self.manifest["chunk_size"])

    @property
    def retrieved_len(self) -> int:
        """r, tokens of one retrieved neighbour: [chunk, continuation] = 2m."""
        return retrieved_length(self.chunk_size)

    def check_model(self, config: ModelShape) -> None:
        """One-line error unless a RETRO model with ``config`` reads this memory's neighbours: the same
        chunk length m and retrieved length r (a baseline reads none; any fits)."""
        if config.retro and (config.chunk_size != self.chunk_size or config.retrieved_len != self.retrieved_len):
            raise BurrowError(f"model chunk size {config.chunk_size} / retrieved length {config.retrieved_len} "
                              f"do not match the memory's {self.chunk_size} / {self.retrieved_len}")

    def check_vocab(self, vocab_size: int | None) -> None:
        """One-line error when this memory's tokenizer has ids past a model's vocabulary of ``vocab_size``
        (None: not known); any model that reads the memory's text needs it, baseline or RETRO."""
        if vocab_size is not None and self.tokenizer.vocab_size > vocab_size:
            raise BurrowError(f"the memory's tokenizer has {self.tokenizer.vocab_size} tokens but the model only "
                              f"{vocab_size}; use the memory the model was trained with")

    @cached_property
    def index(self) -> Any:
        """The FAISS index (search parameters applied)."""
        m = require_manifest(self.dir, "index")
        path = self.dir / "index.faiss"
        fix = "re-run the `burrow memory build` command that made the memory: it builds the index again"
        with damaged(path, fix):
            index = load_index(path, m.get("search_params", ""))
        # another memory's index (copied over this one) searched chunk ids of the wrong documents, or past the
        # chunk table: its size or key count tells it from the one this memory's build wrote
        n, chunks = int(index.ntotal), int(self.manifest["n_chunks"])
        if n != chunks:
            raise BurrowError(f"{path} is damaged (it holds {n:,} keys for the memory's {chunks:,} chunks); {fix}")
        if not file_as_recorded(path, m):
            raise BurrowError(f"{path} is damaged (not of the size this memory's build wrote); {fix}")
        return index

    @property
    def encoder(self) -> FrozenEncoder:
        """The frozen encoder that made the keys (loaded on first use and checked)."""
        if self._encoder is None:
            from burrow.memory.encode import FrozenEncoder  # torch: only when keys are made, not to open a memory

            self._encoder = FrozenEncoder(EncoderConfig(**self.manifest["encoder_config"]))
        if self._checked_encoder is not self._encoder:  # once per encoder: the fingerprint reads its weights
            recorded = self.manifest["encoder"]  # (a memory an earlier burrow built: the fingerprint it recorded)
            if self._encoder.fingerprint() != recorded and self._encoder.earlier_fingerprint() != recorded:
                raise BurrowError(
                    f"encoder {self._encoder.config.model!r} is not the one this memory's keys were made with "
                    f"({self.manifest['encoder_config']['model']!r})"
                )
            self._checked_encoder = self._encoder
        return self._encoder

    def __len__(self) -> int:
        return len(self.chunks)

    def info(self) -> dict[str, Any]:
        """Summary of every stage's manifest."""
        out: dict[str, Any] = {"directory": str(self.dir)}
        for kind in ("memory", "tokenizer", "chunks", "embeddings", "index"):
            p = self.dir / f"{kind}.manifest.json"
            out[kind] = read_json(p) if p.exists() else None
        out["tokens"] = self.store.manifest
        out["neighbours"] = [read_json(p) for p in sorted((self.dir / "neighbours").glob("*.manifest.json"))]
        try:
            out["bm25"] = bm25_status(self)
        except BurrowError as e:  # a damaged BM25 manifest: the rest of the memory is still worth showing
            out["bm25"] = {"damaged": str(e)}
        return out

    def encode_tokens(self, chunks: np.ndarray) -> np.ndarray:
        """(q, e) keys of token chunks (q, ≤m) (pads dropped): decoded with the memory's tokenizer, then
        encoded with its frozen encoder, ``ENCODE_BLOCK`` chunks at a time."""
        chunks = np.asarray(chunks)
        if len(chunks) == 0:
            return np.zeros((0, int(self.manifest["dim"])), dtype=np.float32)
        parts = []
        for s in range(0, len(chunks), ENCODE_BLOCK):
            block = chunks[s : s + ENCODE_BLOCK]
            parts.append(self.encoder.encode(self.tokenizer.decode_batch(block.tolist())))
            if len(chunks) > ENCODE_BLOCK:
                log.info("encoded %d / %d query chunks", min(s + ENCODE_BLOCK, len(chunks)), len(chunks))
        return np.concatenate(parts).astype(np.float32, copy=False)

    def keys_for_tokens(self, chunks: np.ndarray) -> np.ndarray:
        """Keys of token chunks (q, ≤m); the same as :meth:`encode_tokens`."""
        return self.encode_tokens(chunks)

    def search_keys(self, keys: np.ndarray, k: int = DEFAULT_K, exclude_docs: np.ndarray | None = None,
                    within: np.ndarray | None = None,
                    progress: Callable[[int], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances (q, k) float32 squared L2, ids (q, k) int64 memory chunk ids) of keys (q, e).

        ``exclude_docs`` (q,) gives, per query, a memory document whose chunks must not be returned
        (same-document exclusion; -1 excludes nothing). ``within`` (c,) sorted memory chunk ids
        restricts the search to those chunks: an exact search over their stored keys. Missing
        neighbours are -1 / inf.
        """
        k = check_k(k)
        keys = np.asarray(keys)
        dim = int(self.manifest["dim"])
        if keys.ndim != 2 or keys.shape[1] != dim:  # (FAISS's own check is a bare AssertionError)
            raise BurrowError(f"keys must be a 2-D array (queries, {dim}) of this memory's encoder, not of shape "
                              f"{keys.shape}")
        if exclude_docs is not None:
            exclude_docs = check_ids(exclude_docs, "exclude_docs", len(keys), -1, self.store.n_docs)
        if within is None:
            return search_excluding(self.index, keys, k, exclude_docs, self.chunks.docs, progress=progress)
        if exclude_docs is not None:
            raise BurrowError("a search within a subset of chunks does not exclude documents")
        within_ids = check_ids(within, "within", None, 0, len(self.chunks))
        if within_ids.size > 1 and bool((np.diff(within_ids) <= 0).any()):  # the keys are read in shard order
            raise BurrowError("within must list chunk ids in increasing order, each once (np.unique(ids) sorts them)")
        return self._search_within(keys, k, within_ids)

    def _search_within(self, keys: np.ndarray, k: int, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        subset = self.stored_keys(chunk_ids)  # (c, e)
        index = faiss.IndexFlatL2(subset.shape[1])
        index.add(np.ascontiguousarray(subset))
        dists, local = search(index, keys, k)  # (q, k) positions in chunk_ids
        return dists, np.where(local < 0, -1, chunk_ids[np.maximum(local, 0)])

    def stored_keys(self, chunk_ids: np.ndarray) -> np.ndarray:
        """(c, e) keys of memory chunks as stored at build time (key shards, else the flat index)."""
        return stored_keys(self.dir, self.index, np.asarray(chunk_ids, dtype=np.int64))

    def check_trained_on(self, path: str | Path) -> None:
        """One-line error when there is nothing at ``path`` (a model directory, a run, ``RUN/final`` or a
        checkpoint), or when its run's config.json records training with another tokenizer than this
        memory's (a bare model directory has no record; then only the vocabulary size can be checked, by
        the caller). Reads no weights: a wrong path fails before torch and the model code load."""
        p = require_model_path(path)
        p = p.parent if p.is_file() else p
        for run in (p, p.parent, p.parent.parent):  # the run dir, RUN/final, RUN/checkpoints/step_N
            try:
                record = read_json(run / "config.json") if (run / "config.json").is_file() else None
            except BurrowError:
                continue  # a damaged record: loading the model reports what is wrong
            if not isinstance(record, dict) or not isinstance(record.get("data"), dict) or "train" not in record:
                continue
            trained, have = record["data"].get("tokenizer"), self.manifest["tokenizer"]
            if trained is not None and trained != have:
                raise BurrowError(f"{path} was trained with tokenizer {trained} but memory {self.dir} uses {have}; "
                                  "use the memory it was trained with (or build one with that memory's --tokenizer)")
            return

    def warm_up(self, retriever: str = "dense") -> None:
        """Open the lazily loaded parts now (tokenizer, chunks, token store, and through one search the
        encoder and index, or BM25): a caller's first search, and whatever it times, then pays none of it."""
        _ = self.tokenizer, self.chunks, self.store
        self.search(["warm-up"], k=1, retriever=retriever)

    def search(self, queries: list[str] | np.ndarray, k: int = DEFAULT_K, exclude_docs: np.ndarray | None = None,
               with_text: bool = True, retriever: str = "dense") -> SearchResult:
        """Nearest chunks of ``queries`` (a list of texts, or token chunks (q, ≤m)) with tokens, text
        and provenance. A bare string is refused (give ``[text]``): it is not read as one query per character.
        A blank text has no neighbours (id -1): its key, the encoder's bias, is near arbitrary chunks.

        ``exclude_docs`` as in :meth:`search_keys`. ``retriever`` is ``dense`` (the encoder's keys in
        the FAISS index) or ``bm25`` (:mod:`burrow.memory.bm25`, built with ``burrow memory bm25``;
        distances are then negated BM25 scores).
        """
        if retriever not in RETRIEVERS:
            raise BurrowError(f"retriever must be one of {', '.join(RETRIEVERS)}, not {retriever!r}")
        queries, k = check_queries(queries), check_k(k)
        if exclude_docs is not None:
            exclude_docs = check_ids(exclude_docs, "exclude_docs", len(queries), -1, self.store.n_docs)
        if retriever == "bm25":
            return search_bm25(self, queries, k, exclude_docs, with_text)
        if isinstance(queries, np.ndarray):
            keys = self.encode_tokens(queries)
        else:
            keys = self.encoder.encode(list(queries))
        dists, ids = self.search_keys(keys, k, exclude_docs)
        if not isinstance(queries, np.ndarray):
            blank = np.array([not q.strip() for q in queries], dtype=bool)
            ids[blank], dists[blank] = -1, np.inf  # nothing to search for: no neighbours (BM25 finds none either)
        return self.result(ids, dists, with_text=with_text)

    def result(self, ids: np.ndarray, dists: np.ndarray, with_text: bool = True) -> SearchResult:
        """Build a :class:`SearchResult` (tokens, text, provenance) for neighbour ids; a missing neighbour
        (id -1) has offset -1 and empty text, source and document id."""
        tokens = neighbour_values(self.store, self.chunks, ids)  # (q, k, r)
        res = SearchResult(ids=ids, distances=dists, tokens=tokens)
        found = ids >= 0
        safe = np.where(found, ids, 0)
        docs = self.chunks.docs[safe]
        res.offsets = np.where(found, self.chunks.starts[safe] - self.store.offsets[docs], -1)
        if with_text:
            m = self.chunk_size

            def each(value: Callable[[int, int], str]) -> list[list[str]]:
                return [[value(q, j) if found[q, j] else "" for j in range(ids.shape[1])] for q in range(len(ids))]

            res.texts = each(lambda q, j: self.tokenizer.decode(tokens[q, j].tolist()))
            res.chunk_texts = each(lambda q, j: self.tokenizer.decode(tokens[q, j, :m].tolist()))
            res.sources = each(lambda q, j: self.display_sources[docs[q, j]])
            res.doc_ids = each(lambda q, j: self.store.docs[docs[q, j]].id)
        return res

    def chunk_tokens(self, ids: np.ndarray) -> np.ndarray:
        """(q, m) tokens of memory chunks."""
        return chunk_tokens(self.store, self.chunks, ids)

    def neighbour_table(self, name: str = "self", k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
        """A precomputed neighbour table: (ids (chunks, k) int64, distances) memory-mapped."""
        ids_p, dist_p, _ = neighbour_table_paths(self.dir, name, k)
        require_manifest(ids_p.parent, ids_p.name.removesuffix(".ids.npy"))
        fix = f"recompute it: burrow memory neighbours {self.dir} -k {k} --force"
        with damaged(ids_p, fix):
            ids = np.load(ids_p, mmap_mode="r")
        with damaged(dist_p, fix):
            return ids, np.load(dist_p, mmap_mode="r")
