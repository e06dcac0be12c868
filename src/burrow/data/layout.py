"""The one chunk layout of a document, shared by training, evaluation, generation and serving.

Shape legend: L tokens of a document d, m chunk length, P = m − 1 prefix positions.

A document's tokens d are cut into chunks d[u·m:(u+1)·m] starting at the document's first token:
exactly the memory's chunks, so the query of chunk u is a memory chunk and a neighbour holding the
same text sits in the frame the model copies from (CCA's aligned rotary frames). The first token
d0 is predicted from a document-start token s (the tokenizer's eos, else its pad id) placed in the
last slot of the chunk *before* the document. Training gets this for free: its sequences are
consecutive chunk slots of the token store, and the slot before a document's first chunk ends in s.

Evaluation and generation reproduce it by feeding the model

    x = [pad] × (m − 1) + [s] + d[:−1]        (length L + m − 1)

so x[m·(u+1) : m·(u+2)] = d[u·m:(u+1)·m]: input chunk u + 1 of x is document chunk u, and the
target of position p ≥ m − 1 is d[p − (m − 1)]. Input chunk 0 (pads + s) is never a query. Chunk
u's neighbours condition positions from (u+2)·m − 1 on, whose targets come after every token of
the query: RETRO's one-token CCA offset, unchanged.
"""

from __future__ import annotations

import numpy as np

from burrow.data.tokenizer import Tokenizer


def start_token(tok: Tokenizer) -> int:
    """The document-start token s: the tokenizer's eos id when it has one, else its pad id."""
    return int(tok.eos_id) if tok.eos_id is not None else int(tok.pad_id)


def target_offset(m: int) -> int:
    """P = m − 1: the input position whose target is d0 (positions before it have no target)."""
    return m - 1


def prefix(m: int, start_id: int, pad_id: int) -> list[int]:
    """The chunk fed before a document: m − 1 pads, then s (m tokens; input chunk 0, never a query)."""
    return [pad_id] * (m - 1) + [start_id]


def document_inputs(d: np.ndarray, m: int, start_id: int, pad_id: int) -> np.ndarray:
    """(L + m − 1,) model input of document ``d``: ``prefix`` + d[:−1]; position p ≥ m − 1 predicts d[p − m + 1]."""
    head = np.asarray(prefix(m, start_id, pad_id), dtype=np.int64)
    return np.concatenate([head, np.asarray(d[:-1], dtype=np.int64)])


def n_queries(length: int, m: int) -> int:
    """Document chunks usable as RETRO queries: complete ones whose neighbours condition a target."""
    return max(0, (length - 1) // m)


#: A retrieved neighbour is [chunk, continuation]: this many chunk lengths of tokens (RETRO §2.3).
RETRIEVED_CHUNKS = 2


def retrieved_length(m: int) -> int:
    """r: tokens of one retrieved neighbour, [chunk, continuation] = 2m (the one place the rule lives)."""
    return RETRIEVED_CHUNKS * m


def window_length(max_len: int, m: int) -> int:
    """The longest evaluation window n ≤ ``max_len`` that is a multiple of 2m, so that windows (stride
    n/2) start on chunk boundaries; 0 when ``max_len`` < 2m."""
    return max_len // (2 * m) * (2 * m)
