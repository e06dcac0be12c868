"""Evaluation documents: tokens, UTF-8 bytes, and the attribution of bytes to 64-token chunks.

Shape legend: D documents, L tokens of one document, q chunks of the whole data set, m chunk length,
P = m − 1 positions before a document's first target.

Scoring convention (docs/evaluation.md): the one chunk layout of :mod:`burrow.data.layout`. A
document's token ids d are predicted from the input x = [pad] × (m − 1) + [s] + d[:-1], where s is
the document-start token, so every token of d, and so every byte of the text, is predicted exactly
once, and the chunks of x after the first are exactly the document's (= the memory's) chunks, as
in training. Target chunk C_u is d[u·m : (u+1)·m]; it is also input chunk u + 1 of x and the
query whose neighbours condition C_{u+1}. Its bytes are the growth of the settled decoded prefix,
so a character split by a chunk boundary is counted once and the chunk bytes of a document sum to
its UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from burrow.data.corpus import CorpusConfig, CorpusStats, read_corpus
from burrow.data.layout import document_inputs, n_queries, start_token, target_offset
from burrow.data.tokenizer import Tokenizer
from burrow.data.tokens import TokenStore
from burrow.errors import BurrowError

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    """A tokenized evaluation set with per-document and per-chunk byte counts."""

    doc_ids: list[str]  # stable document ids, in scoring order
    tokens: list[np.ndarray]  # per document: (L,) int64 token ids d (the targets)
    doc_bytes: np.ndarray  # (D,) int64 UTF-8 bytes of each document's text
    chunk_bytes: np.ndarray  # (q,) int64 bytes attributed to each target chunk; sums to doc_bytes per document
    chunk_size: int  # m
    start_id: int  # s: the token fed before each document's first token
    pad_id: int  # the tokenizer's pad id (pads short chunks; never a real token)
    texts: list[str] | None = field(default=None, repr=False)  # the documents' text (methods that re-tokenize)
    _inputs: list[np.ndarray] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        lengths = np.array([len(t) for t in self.tokens], dtype=np.int64)
        if (lengths == 0).any():
            raise BurrowError("evaluation documents must have at least one token")
        n_chunks = -(-lengths // self.chunk_size)  # ceil: the last target chunk may be short
        self.chunk_offsets = np.concatenate([[0], np.cumsum(n_chunks)]).astype(np.int64)  # (D+1,)
        # Queries: complete document chunks whose neighbours condition a later target (layout.n_queries).
        queries = [n_queries(int(n), self.chunk_size) for n in lengths]
        self.input_offsets = np.concatenate([[0], np.cumsum(queries)]).astype(np.int64)  # (D+1,)
        self.chunk_doc = np.repeat(np.arange(len(lengths)), n_chunks)  # (q,)
        within = np.arange(len(self.chunk_doc)) - self.chunk_offsets[self.chunk_doc]
        self.chunk_len = np.minimum(self.chunk_size, lengths[self.chunk_doc] - within * self.chunk_size)  # (q,) |C|
        if len(self.chunk_bytes) != len(self.chunk_doc):
            raise BurrowError(f"chunk_bytes has {len(self.chunk_bytes)} entries, expected {len(self.chunk_doc)}")
        m = self.chunk_size
        self._inputs = [document_inputs(t, m, self.start_id, self.pad_id) for t in self.tokens]

    def first_docs(self, count: int) -> EvalData:
        """The first ``count`` documents, tokenized as here (a cheaper set for sweeps)."""
        c = int(self.chunk_offsets[count])
        return EvalData(self.doc_ids[:count], self.tokens[:count], self.doc_bytes[:count], self.chunk_bytes[:c],
                        self.chunk_size, self.start_id, self.pad_id, None if self.texts is None else self.texts[:count])

    @property
    def n_docs(self) -> int:
        """D."""
        return len(self.tokens)

    @property
    def n_tokens(self) -> int:
        """Tokens scored (every token of every document)."""
        return int(sum(len(t) for t in self.tokens))

    @property
    def n_bytes(self) -> int:
        """UTF-8 bytes scored."""
        return int(self.doc_bytes.sum())

    @property
    def target_offset(self) -> int:
        """P = m − 1: input position of the first target (d0) in every document's input."""
        return target_offset(self.chunk_size)

    def inputs(self, doc: int) -> np.ndarray:
        """(L + m − 1,) model input x = [pad] × (m − 1) + [s] + d[:-1] of document ``doc``."""
        return self._inputs[doc]

    def targets(self, doc: int) -> np.ndarray:
        """(L + m − 1,) target of each input position: d[p − P], and the pad id (unscored) before P."""
        d = self.tokens[doc]
        return np.concatenate([np.full(self.target_offset, self.pad_id, dtype=np.int64), d])

    def chunk_of_bytes(self, doc: int, byte_ends: np.ndarray) -> np.ndarray:
        """Target-chunk rows (into the data set's q chunks) owning the bytes ending at ``byte_ends`` of ``doc``.

        For methods that score with another tokenizer: a token whose text ends at byte e (exclusive)
        belongs to the chunk whose byte range holds byte e − 1, so its bits land in that chunk's bpb(α).
        """
        first, last = int(self.chunk_offsets[doc]), int(self.chunk_offsets[doc + 1])
        bounds = np.cumsum(self.chunk_bytes[first:last])  # (c,) exclusive end byte of each chunk
        within = np.searchsorted(bounds, np.maximum(np.asarray(byte_ends) - 1, 0), side="right")
        return first + np.minimum(within, last - first - 1)

    def query_rows(self, doc: int) -> np.ndarray:
        """Rows of :meth:`input_chunks` (and of the data set's target chunks) that document ``doc`` queries with."""
        return np.arange(self.input_offsets[doc], self.input_offsets[doc + 1])

    def input_chunks(self) -> np.ndarray:
        """(q_in, m) the RETRO[ON] queries: every document's complete chunks d[u·m:(u+1)·m] with u < n_queries.

        Query u is input chunk u + 1 of x; its neighbours condition targets C_{u+1}, C_{u+2}, … only.
        """
        m = self.chunk_size
        parts = [t[: n_queries(len(t), m) * m].reshape(-1, m) for t in self.tokens]
        return np.concatenate(parts) if parts else np.zeros((0, m), dtype=np.int64)

    def input_rows_in_targets(self) -> np.ndarray:
        """(q_in,) for each query, its row among :meth:`target_chunks` (the same tokens)."""
        return np.concatenate([self.chunk_offsets[d] + np.arange(self.input_offsets[d + 1] - self.input_offsets[d])
                               for d in range(self.n_docs)]).astype(np.int64)

    def target_chunks(self) -> np.ndarray:
        """(q, m) every target chunk C_u = d[u·m:(u+1)·m], short ones right-padded with the pad id."""
        m = self.chunk_size
        parts = []
        for d in self.tokens:
            padded = np.full(-(-len(d) // m) * m, self.pad_id, dtype=np.int64)
            padded[: len(d)] = d
            parts.append(padded.reshape(-1, m))
        return np.concatenate(parts)

    def fingerprint(self) -> str:
        """Hash of the tokens, start token and chunk size: keys the on-disk neighbour cache."""
        h = hashlib.sha256(f"layout=doc-aligned:{self.chunk_size}:{self.start_id}:{self.pad_id}".encode())
        for t in self.tokens:
            h.update(np.int64(len(t)).tobytes())
            h.update(np.ascontiguousarray(t, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def chunk_bytes_of(tokens: np.ndarray, text_bytes: int, tok: Tokenizer, m: int) -> np.ndarray:
    """(ceil(L/m),) UTF-8 bytes of each chunk: the growth of the settled decoded prefix.

    The prefix d[:(u+1)m] settles the bytes it shares with the whole decoded document; a character
    whose byte-fallback tokens straddle a chunk boundary decodes to U+FFFD in the shorter prefix, so
    it is settled — and counted, once — by the chunk that completes it. Prefix decodes cost
    O(L² / m) (seconds for 100k-token documents). When the tokenizer does not round-trip exactly,
    the last chunk absorbs the difference so the chunks still sum to the text's bytes.
    """
    ids = tokens.tolist()
    full = tok.decode(ids).encode("utf-8")
    cuts = list(range(m, len(ids), m))
    settled = [_common_prefix(p.encode("utf-8"), full) for p in tok.decode_batch([ids[:c] for c in cuts])]
    cum = np.maximum.accumulate(np.array([0, *settled, len(full)], dtype=np.int64))
    cum[-1] = text_bytes
    out = np.diff(cum)
    if len(full) != text_bytes or (out < 0).any():
        log.warning("the tokenizer does not round-trip a document exactly; its last chunk's bytes are adjusted")
        out = np.maximum(out, 0)
        out[-1] += text_bytes - out.sum()
    return out


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of two byte strings (vectorised)."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n))
    return int(diff[0]) if len(diff) else n


def from_texts(doc_ids: Sequence[str], texts: Sequence[str], tok: Tokenizer, chunk_size: int) -> EvalData:
    """Tokenize ``texts`` with ``tok`` (the memory's tokenizer) and attribute their bytes to chunks."""
    ids_all = tok.encode_batch(list(texts))
    keep = [i for i, ids in enumerate(ids_all) if ids]
    if len(keep) < len(texts):
        log.info("skipped %d evaluation documents with no tokens", len(texts) - len(keep))
    if not keep:
        raise BurrowError("no evaluation documents with any tokens")
    tokens = [np.asarray(ids_all[i], dtype=np.int64) for i in keep]
    doc_bytes = np.array([len(texts[i].encode("utf-8")) for i in keep], dtype=np.int64)
    chunk_bytes = np.concatenate([chunk_bytes_of(t, int(b), tok, chunk_size)
                                  for t, b in zip(tokens, doc_bytes, strict=True)])
    return EvalData([doc_ids[i] for i in keep], tokens, doc_bytes, chunk_bytes, chunk_size,
                    start_token(tok), tok.pad_id, texts=[texts[i] for i in keep])


def load_eval_data(paths: Sequence[str | Path], tok: Tokenizer, chunk_size: int, max_docs: int | None = None,
                   corpus: CorpusConfig | None = None) -> EvalData:
    """Read evaluation documents from files (WikiText splits into articles), first ``max_docs`` of them."""
    stats = CorpusStats()
    ids: list[str] = []
    texts: list[str] = []
    # islice stops before reading document max_docs + 1 (a break after reading it counted it in the log's summary)
    for doc in islice(read_corpus(paths, corpus or CorpusConfig(), stats), max_docs):
        ids.append(doc.id)
        texts.append(doc.text)
    log.info(stats.summary())
    if not texts:
        raise BurrowError(f"no evaluation documents in {', '.join(map(str, paths))}")
    return from_texts(ids, texts, tok, chunk_size)


def from_store(store: TokenStore, tok: Tokenizer, chunk_size: int, max_docs: int | None = None) -> EvalData:
    """An evaluation set from a token store made with ``tok`` (bytes from its document records)."""
    store.check_tokenizer(tok)
    n = store.n_docs if max_docs is None else min(max_docs, store.n_docs)
    keep = [d for d in range(n) if store.offsets[d + 1] > store.offsets[d]]
    tokens = [store.document(d).astype(np.int64) for d in keep]
    doc_bytes = np.array([store.docs[d].bytes for d in keep], dtype=np.int64)
    chunk_bytes = np.concatenate([chunk_bytes_of(t, int(b), tok, chunk_size)
                                  for t, b in zip(tokens, doc_bytes, strict=True)])
    return EvalData([store.docs[d].id for d in keep], tokens, doc_bytes, chunk_bytes, chunk_size,
                    start_token(tok), tok.pad_id, texts=[tok.decode(t.tolist()) for t in tokens])
