"""Requests as rows of model input, batched by length; RETRO[ON]'s neighbours retrieved once per chunk.

Shape legend: b rows in a batch, n tokens of the longest row, l = n // m chunks, k neighbours,
r = 2m retrieved tokens, v vocabulary, q query chunks.

A :class:`Row` is one model call's input and the span of its positions that are scored. A
loglikelihood request is one row; a rolling (perplexity) request is several (its windows). Rows are
sorted longest first and packed into batches of about ``batch_tokens`` tokens, right-padded (the
models are causal, so padding after a row never changes its logits; a padded chunk gets no
neighbours).

RETRO[ON]: a row's complete chunks, except input chunk 0 of a document (pads and s), are its queries,
exactly as in ``burrow eval``. Every distinct chunk is searched once (:class:`ChunkNeighbours` keeps
them across batches and requests: the shared context of a multiple-choice question is searched once
for all its answers), never once per token.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from burrow.device import autocast
from burrow.memory import Memory
from burrow.tasks.backends import Backend

log = logging.getLogger(__name__)

SOFTMAX_BLOCK = 1024  # positions per fp32 log-softmax block (keeps (positions, v) small for big vocabularies)


@dataclass
class Row:
    """One model call: input tokens, the next token of each, and the scored span [score_from, len)."""

    tokens: list[int]
    targets: list[int]
    score_from: int
    doc_start: bool  # tokens[0:m] is input chunk 0 of a document (pads + s): never a query


def layout_row(head: list[int], doc: list[int], n_score: int, max_len: int, m: int) -> Row:
    """A document (``head`` + doc[:-1] -> doc) scoring its last ``n_score`` tokens, cut on the left to
    ``max_len`` tokens at a chunk boundary so its chunks stay the document's chunks."""
    x = head + doc[:-1]
    y = [0] * (len(head) - 1) + doc
    start = 0 if len(x) <= max_len else math.ceil((len(x) - max_len) / m) * m
    return Row(x[start:], y[start:], max(len(x) - n_score - start, 0), start == 0)


def plain_row(context: list[int], continuation: list[int], max_len: int) -> Row:
    """lm-eval's ``hf`` reading: (context + continuation)[-(max_len + 1):][:-1], last len(continuation) scored."""
    whole = (context + continuation)[-(max_len + 1):]
    x, y = whole[:-1], whole[1:]
    return Row(x, y, max(len(x) - len(continuation), 0), True)


def batches(rows: list[Row], batch_tokens: int) -> Iterator[list[int]]:
    """Row indices, longest first, in batches of at most ``batch_tokens`` padded tokens (≥ 1 row)."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].tokens))
    batch: list[int] = []
    for i in order:
        width = len(rows[batch[0]].tokens) if batch else len(rows[i].tokens)
        if batch and (len(batch) + 1) * width > batch_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def query_chunks(row: Row, m: int) -> Iterator[tuple[int, list[int]]]:
    """(input chunk u, its m tokens) for each complete chunk of ``row`` that is a RETRO query."""
    for u in range(len(row.tokens) // m):
        if u == 0 and row.doc_start:
            continue
        yield u, row.tokens[u * m : (u + 1) * m]


class ChunkNeighbours:
    """Neighbours of query chunks, searched once per distinct chunk and kept for the whole run."""

    def __init__(self, memory: Memory, k: int) -> None:
        self.memory, self.k = memory, k
        self.found: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # chunk -> (tokens (k, r), mask (k,))
        self.searched = 0  # chunks searched so far (the bench checks: once per chunk, never per token)

    def prefetch(self, rows: list[Row], m: int) -> None:
        """Search every not yet seen query chunk of ``rows`` in one batch."""
        new: dict[bytes, list[int]] = {}
        for row in rows:
            for _, chunk in query_chunks(row, m):
                key = np.asarray(chunk, dtype=np.int64).tobytes()
                if key not in self.found:
                    new[key] = chunk
        if not new:
            return
        res = self.memory.search(np.asarray(list(new.values()), dtype=np.int64), k=self.k, with_text=False)
        for j, key in enumerate(new):
            self.found[key] = (res.tokens[j], res.ids[j] >= 0)
        self.searched += len(new)
        log.debug("searched %d new query chunks (%d so far)", len(new), self.searched)

    def tensors(self, rows: list[Row], n: int, m: int, pad_id: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(neighbours (b, l, k, r), mask (b, l, k)) of a batch padded to n tokens."""
        r = int(self.memory.retrieved_len)
        nb = np.full((len(rows), n // m, self.k, r), pad_id, dtype=np.int64)  # (b, l, k, r)
        mask = np.zeros((len(rows), n // m, self.k), dtype=bool)  # (b, l, k)
        self.prefetch(rows, m)
        for i, row in enumerate(rows):
            for u, chunk in query_chunks(row, m):
                tokens, ok = self.found[np.asarray(chunk, dtype=np.int64).tobytes()]
                nb[i, u], mask[i, u] = tokens, ok
        return torch.as_tensor(nb, device=device), torch.as_tensor(mask, device=device)


def score_rows(backend: Backend, rows: list[Row], neighbours: ChunkNeighbours | None, device: torch.device,
               dtype: torch.dtype | None, batch_tokens: int) -> list[tuple[float, bool]]:
    """Per row: (Σ log p of the scored targets, whether each was the argmax)."""
    out: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
    m = backend.chunk_size
    if neighbours is not None:
        neighbours.prefetch(rows, m)
    for idx in batches(rows, batch_tokens):
        group = [rows[i] for i in idx]
        n = len(group[0].tokens)
        x = torch.full((len(group), n), backend.pad_id, dtype=torch.long)  # (b, n)
        for i, row in enumerate(group):
            x[i, : len(row.tokens)] = torch.as_tensor(row.tokens)
        nb = mask = None
        if neighbours is not None and n >= m:
            nb, mask = neighbours.tensors(group, n, m, backend.pad_id, device)
        keep = n - min(row.score_from for row in group)  # positions any row scores: the head runs only there
        with torch.inference_mode(), autocast(device, dtype):
            logits = backend.forward(x.to(device), nb, mask, keep)  # (b, keep, v)
        for j, i in enumerate(idx):
            out[i] = _span_score(logits[j], group[j], n - keep)
    return out


def _span_score(logits: torch.Tensor, row: Row, offset: int) -> tuple[float, bool]:
    """(Σ log p, all greedy) over the scored span of one row, from its logits of positions offset… (p, v), a
    block of positions at a time."""
    total, greedy = 0.0, True
    end = len(row.tokens)
    for a in range(row.score_from, end, SOFTMAX_BLOCK):
        b = min(a + SOFTMAX_BLOCK, end)
        span = logits[a - offset : b - offset].float()  # (p, v)
        t = torch.as_tensor(row.targets[a:b], device=span.device)
        lp = span.gather(-1, t[:, None])[:, 0] - torch.logsumexp(span, -1)
        total += float(lp.double().sum())
        greedy = greedy and bool((span.argmax(-1) == t).all())
    return total, greedy
