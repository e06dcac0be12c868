"""Chunks of a token store: m tokens each, never across a document boundary.

Shape legend: q queries/chunks, m chunk length (64), r = 2m retrieved length ([chunk, continuation]).

A document of L tokens gives ceil(L / m) chunks starting at its first token; the last may be short.
Short chunks and continuations that run past the document's end are padded on the right with the
tokenizer's pad id, so every retrieved value is exactly r = 2m tokens at fixed positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from burrow.artefacts import atomic_path
from burrow.data.layout import retrieved_length
from burrow.data.tokens import TokenStore


@dataclass(frozen=True)
class ChunkTable:
    """Start, length and document of every chunk of a token store."""

    starts: np.ndarray  # (q,) int64 flat token position of each chunk's first token
    lengths: np.ndarray  # (q,) int32 real tokens in the chunk (≤ m)
    docs: np.ndarray  # (q,) int32 document index of each chunk
    chunk_size: int  # m

    def __len__(self) -> int:
        return len(self.starts)

    def save(self, path: Path) -> None:
        """Write as one .npz, atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, starts=self.starts, lengths=self.lengths, docs=self.docs,
                         chunk_size=np.int64(self.chunk_size))

    @classmethod
    def load(cls, path: Path) -> ChunkTable:
        """Read a table written by :meth:`save`."""
        z = np.load(path)
        return cls(z["starts"], z["lengths"], z["docs"], int(z["chunk_size"]))


def chunk_table(store: TokenStore, chunk_size: int = 64) -> ChunkTable:
    """Cut every document of ``store`` into chunks of ``chunk_size`` tokens (vectorised, no Python loop)."""
    doc_len = np.diff(store.offsets)  # (docs,)
    n_chunks = -(-doc_len // chunk_size)  # ceil; 0 for an empty document
    docs = np.repeat(np.arange(store.n_docs, dtype=np.int32), n_chunks)
    first_chunk = np.cumsum(n_chunks) - n_chunks  # index of each document's first chunk
    within = np.arange(len(docs), dtype=np.int64) - np.repeat(first_chunk, n_chunks)
    starts = store.offsets[docs] + within * chunk_size
    ends = store.offsets[docs + 1]
    lengths = np.minimum(ends - starts, chunk_size).astype(np.int32)
    return ChunkTable(starts.astype(np.int64), lengths, docs, chunk_size)


def gather(store: TokenStore, starts: np.ndarray, doc_ends: np.ndarray, width: int, pad_id: int) -> np.ndarray:
    """Tokens [start, start + width) of each row, padded with ``pad_id`` past the row's document end."""
    pos = starts[:, None] + np.arange(width)[None, :]  # (q, width)
    valid = pos < doc_ends[:, None]
    if store.n_tokens == 0:
        return np.full(pos.shape, pad_id, dtype=np.int64)
    out = np.asarray(store.tokens[np.minimum(pos, store.n_tokens - 1)]).astype(np.int64)
    out[~valid] = pad_id
    return out


def chunk_tokens(store: TokenStore, table: ChunkTable, ids: np.ndarray) -> np.ndarray:
    """(q, m) tokens of chunks ``ids``, short chunks right-padded."""
    ids = np.asarray(ids, dtype=np.int64)
    ends = table.starts[ids] + table.lengths[ids]
    return gather(store, table.starts[ids], ends, table.chunk_size, store.pad_id)


def neighbour_values(store: TokenStore, table: ChunkTable, ids: np.ndarray) -> np.ndarray:
    """(..., 2m) retrieved values [chunk, continuation] of chunks ``ids``; -1 ids give all-pad rows.

    The continuation is the next m tokens of the same document: never a token of another document.
    """
    shape = np.shape(ids)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    safe = np.where(ids < 0, 0, ids)
    m = table.chunk_size
    doc_end = store.offsets[table.docs[safe] + 1]
    chunk = gather(store, table.starts[safe], table.starts[safe] + table.lengths[safe], m, store.pad_id)
    cont = gather(store, table.starts[safe] + m, doc_end, m, store.pad_id)
    out = np.concatenate([chunk, cont], axis=-1)  # (q, 2m)
    out[ids < 0] = store.pad_id
    return out.reshape(*shape, retrieved_length(m))
