"""Bits-per-byte on whole documents with strided windows: baseline, RETRO[OFF] and RETRO[ON].

Shape legend: b windows in a batch, w window length (≤ n), l chunks, k neighbours, r retrieved tokens
(2m), v vocabulary, L tokens of one document, q target chunks of the data set.

Each document's input x = [pad] × (m − 1) + [s] + d[:-1] (the one chunk layout,
:mod:`burrow.data.layout`) is cut into windows of n tokens starting at multiples of n/2 (the paper:
2048 / 1024). The first window scores all its positions that have a target; each later one only its
last n/2, which the previous window did not reach, so every target token is scored exactly once and
(except in the first window) with at least n/2 tokens of context. Windows start at multiples of
n/2, itself a multiple of m, so a window's chunks are the document's chunks — the memory's chunks,
as in training — and RETRO[ON] can use neighbours retrieved once per document chunk.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from burrow.device import autocast
from burrow.errors import BurrowError
from burrow.evaluate.data import EvalData
from burrow.model.protocol import RetrievalLM

log = logging.getLogger(__name__)

LN2 = math.log(2.0)
MODES = ("baseline", "off", "on")

#: Neighbours for one window: (document, first input chunk of x, complete chunks l) -> (values (l, k, r), mask (l, k)).
Retrieved = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Window:
    """One model call over positions [start, end) of a document's input; it scores [score_from, end)."""

    start: int
    end: int
    score_from: int


def window_plan(length: int, n: int) -> list[Window]:
    """Windows of ``n`` tokens, stride n/2, covering positions [0, length) with each scored once."""
    if n < 2 or n % 2:
        raise BurrowError(f"evaluation window must be an even number of tokens ≥ 2, got {n}")
    if length <= 0:
        return []
    half = n // 2
    windows = [Window(0, min(n, length), 0)]
    start = 0
    while start + n < length:  # the previous window stopped short of the end
        start += half
        windows.append(Window(start, min(start + n, length), start + half))
    return windows


@dataclass
class ModelScore:
    """One model's score on a data set: totals, per document and per target chunk."""

    name: str
    mode: str  # baseline | off | on
    k: int | None  # neighbours per chunk (RETRO[ON] only)
    doc_bits: np.ndarray  # (D,) float64 bits of each document's tokens
    chunk_bits: np.ndarray  # (q,) float64 bits of each target chunk
    doc_bytes: np.ndarray  # (D,) UTF-8 bytes of each document (the denominator)

    @property
    def bits(self) -> float:
        """Σ bits over the data set."""
        return float(self.doc_bits.sum())

    @property
    def bpb(self) -> float:
        """Σ bits / Σ bytes."""
        return self.bits / float(self.doc_bytes.sum())


def check_mode(model: RetrievalLM, mode: str) -> None:
    """Raise unless ``mode`` is valid for ``model`` (RETRO[ON]/[OFF] need a RETRO model)."""
    if mode not in MODES:
        raise BurrowError(f"evaluation mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode in ("on", "off") and not model.config.retro:
        raise BurrowError(f"mode {mode!r} needs a RETRO model; this one is a baseline")


def _batches(jobs: list[tuple[int, Window]], batch_tokens: int) -> Iterator[list[tuple[int, Window]]]:
    """Group windows of equal length (so they stack) into batches of about ``batch_tokens`` tokens."""
    by_len: dict[int, list[tuple[int, Window]]] = {}
    for job in jobs:
        by_len.setdefault(job[1].end - job[1].start, []).append(job)
    for w in sorted(by_len, reverse=True):
        group = by_len[w]
        size = max(1, batch_tokens // w)
        for i in range(0, len(group), size):
            yield group[i : i + size]


def _forward(model: RetrievalLM, x: np.ndarray, nb: np.ndarray | None, mask: np.ndarray | None,
             device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """Log-probabilities (b, w, v) float32 for inputs ``x`` (b, w) and neighbours (b, l, k, r)."""
    tokens = torch.as_tensor(x, dtype=torch.long, device=device)
    neighbours = neighbour_mask = None
    if nb is not None and mask is not None:
        neighbours = torch.as_tensor(nb, dtype=torch.long, device=device)
        neighbour_mask = torch.as_tensor(mask, dtype=torch.bool, device=device)
    with torch.inference_mode(), autocast(device, dtype):
        logits = model(tokens, neighbours=neighbours, neighbour_mask=neighbour_mask)  # (b, w, v)
    return torch.log_softmax(logits.float(), dim=-1)


def run_windows(model: RetrievalLM, data: EvalData, n: int, retrieved: Retrieved | None, device: torch.device,
                dtype: torch.dtype | None, batch_tokens: int = 8192,
                docs: list[int] | None = None) -> Iterator[tuple[list[tuple[int, Window]], torch.Tensor]]:
    """Run ``model`` over every window of ``docs`` (default all); yield (jobs, log-probs (b, w, v)).

    With ``retrieved`` (RETRO[ON]), a window starting at position p gets the neighbours of its
    complete input chunks p/m, p/m + 1, …: input chunk u's neighbours, retrieved with
    x[u·m:(u+1)·m] = C_{u-1}, condition positions from (u+1)·m − 1 on, whose targets come after
    every token of that query. Input chunk 0 (pads and s) has none.
    """
    m = data.chunk_size
    doc_list = range(data.n_docs) if docs is None else docs
    jobs = [(d, w) for d in doc_list for w in window_plan(len(data.inputs(d)), n)]
    for group in _batches(jobs, batch_tokens):
        width = group[0][1].end - group[0][1].start
        x = np.stack([data.inputs(d)[w.start : w.end] for d, w in group])  # (b, w)
        nb = mask = None
        chunks = width // m
        if retrieved is not None and chunks > 0:
            parts = [retrieved(d, w.start // m, chunks) for d, w in group]
            nb = np.stack([p[0] for p in parts])  # (b, l, k, r)
            mask = np.stack([p[1] for p in parts])  # (b, l, k)
        yield group, _forward(model, x, nb, mask, device, dtype)


#: Called after each batch of windows with its (document, window) jobs and the targets' nats (b, w) float32.
BatchObserver = Callable[[list[tuple[int, Window]], torch.Tensor], None]


def scored_spans(group: list[tuple[int, Window]], p0: int) -> Iterator[tuple[int, int, slice, slice]]:
    """(row, document, target positions, window positions) of what each window of a batch scores.

    Window w scores inputs [max(score_from, p0), end): targets [lo − p0, end − p0) of its document,
    read from the window's columns [lo − start, end − start). A window inside the document-start chunk
    (end ≤ p0) scores nothing.
    """
    for row, (d, w) in enumerate(group):
        lo = max(w.score_from, p0)
        if lo < w.end:
            yield row, d, slice(lo - p0, w.end - p0), slice(lo - w.start, w.end - w.start)


def token_bits(model: RetrievalLM, data: EvalData, n: int, retrieved: Retrieved | None, device: torch.device,
               dtype: torch.dtype | None, batch_tokens: int = 8192,
               each: BatchObserver | None = None) -> list[np.ndarray]:
    """Per document, (L,) bits of each target token, each scored by exactly one window.

    ``each`` sees every batch as it is scored (a kNN-LM collects its queries from the same pass).
    """
    bits = [np.full(len(t), np.nan) for t in data.tokens]
    p0 = data.target_offset  # input position of d0
    for group, logp in run_windows(model, data, n, retrieved, device, dtype, batch_tokens):
        targets = np.stack([data.targets(d)[w.start : w.end] for d, w in group])  # (b, w)
        t = torch.as_tensor(targets, dtype=torch.long, device=logp.device)
        nats = -logp.gather(-1, t[..., None]).squeeze(-1)  # (b, w)
        if each is not None:
            each(group, nats)
        row_bits = (nats / LN2).double().cpu().numpy()
        for row, d, doc_pos, win_pos in scored_spans(group, p0):
            bits[d][doc_pos] = row_bits[row, win_pos]
    if any(np.isnan(b).any() for b in bits):  # pragma: no cover - guarded by window_plan's tests
        raise RuntimeError("some tokens were not scored; window plan is broken")
    return bits


def score_model(name: str, model: RetrievalLM, mode: str, data: EvalData, n: int, retrieved: Retrieved | None,
                device: torch.device, dtype: torch.dtype | None, batch_tokens: int = 8192,
                k: int | None = None, each: BatchObserver | None = None) -> ModelScore:
    """Score ``model`` in ``mode`` on ``data``: bits per document and per target chunk (``each``: see
    :func:`token_bits`)."""
    check_mode(model, mode)
    if mode == "on" and retrieved is None:
        raise BurrowError("RETRO[ON] needs neighbours (a memory)")
    model.eval()
    bits = token_bits(model, data, n, retrieved if mode == "on" else None, device, dtype, batch_tokens, each)
    m = data.chunk_size
    chunk_bits = np.concatenate([np.add.reduceat(b, np.arange(0, len(b), m)) for b in bits])  # (q,)
    doc_bits = np.array([b.sum() for b in bits])
    score = ModelScore(name, mode, k if mode == "on" else None, doc_bits, chunk_bits, data.doc_bytes)
    log.info("%s: %.4f bits/byte over %d documents", name, score.bpb, data.n_docs)
    return score


def masked_doc_sums(data: EvalData, chunk_values: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """(D,) per-document sums of per-chunk ``chunk_values`` over the chunks where ``keep`` is true."""
    values = chunk_values if keep is None else np.where(keep, chunk_values, 0.0)
    return np.bincount(data.chunk_doc, weights=values, minlength=data.n_docs)


@dataclass(frozen=True)
class Gain:
    """bpb(reference) − bpb(model) (positive: the model is better) with a bootstrap interval over documents."""

    gain: float
    low: float
    high: float
    relative: float  # gain / bpb(reference)
    alpha: float  # chunks with r(C) ≤ alpha counted (1.0: every chunk)
    samples: int

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return {"gain": self.gain, "low": self.low, "high": self.high, "relative": self.relative,
                "alpha": self.alpha, "samples": self.samples}


def bootstrap_gain(data: EvalData, model: ModelScore, reference: ModelScore, r: np.ndarray | None = None,
                   alpha: float = 1.0, samples: int = 2000, level: float = 0.95, seed: int = 0) -> Gain:
    """Gain of ``model`` over ``reference`` with a percentile interval from resampling documents.

    Both bpbs are recomputed on each resample of documents (with replacement), so the interval
    reflects the paired difference. With ``r`` (leakage ratios per chunk) only chunks with
    r(C) ≤ ``alpha`` count, as in bpb(α); a resample without such a chunk has no bpb and is left out.
    """
    keep = None if r is None or alpha >= 1.0 else r <= alpha + 1e-12
    bytes_d = masked_doc_sums(data, data.chunk_bytes.astype(np.float64), keep)  # (D,)
    a = masked_doc_sums(data, model.chunk_bits, keep)
    b = masked_doc_sums(data, reference.chunk_bits, keep)
    if bytes_d.sum() <= 0:
        raise BurrowError(f"no chunks with r(C) ≤ {alpha}: cannot compare models there")
    point = (b.sum() - a.sum()) / bytes_d.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.n_docs, size=(samples, data.n_docs))  # (samples, D)
    denom = bytes_d[idx].sum(1)  # (samples,)
    # A resample with no byte below α has no bpb there: it is left out (counted as a gain of 0, it pulled the
    # interval towards 0 whenever few documents hold such chunks).
    has = denom > 0
    diffs = (b[idx].sum(1) - a[idx].sum(1))[has] / denom[has]
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2]) if has.any() else (point, point)
    ref_bpb = b.sum() / bytes_d.sum()
    return Gain(float(point), float(lo), float(hi), float(point / ref_bpb), float(alpha), samples)
