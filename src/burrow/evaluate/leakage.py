"""Leakage quantification (RETRO §2.6): r(C) per evaluation chunk and bpb(α) per model.

Shape legend: q target chunks, m chunk length, k neighbours (the evaluation's k_max, 10), r retrieved
tokens (2m), a alphas.

For each evaluation chunk C (≤ m tokens) and its k_max = 10 nearest memory chunks (retrieved with
C's own text), s = the length of the longest contiguous token run shared by C and any neighbour's r
tokens (padding never matches; the kernel is :mod:`burrow.data.overlap`), and r(C) = s / |C|.
bpb(α) = Σ bits(C) / Σ bytes(C) over the chunks with r(C) ≤ α; bpb(1) is the ordinary score. Works
for any scored model: only per-chunk bits are needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from burrow.data.overlap import longest_common_run
from burrow.evaluate.data import EvalData

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_ALPHAS", "Leakage", "bpb_alpha", "leakage_ratios", "longest_common_run", "measure_leakage"]

#: α grid: every multiple of 1/64 (so 0.125 = 8 shared tokens of a 64-token chunk is on it).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(i / 64 for i in range(65))
def leakage_ratios(chunks: np.ndarray, chunk_len: np.ndarray, neighbours: np.ndarray,
                   pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(s (q,) int, r (q,) float): longest shared run and r(C) = s / |C| for every chunk."""
    s = longest_common_run(chunks, neighbours, pad_id)
    return s, s / np.maximum(chunk_len, 1)


def bpb_alpha(chunk_bits: np.ndarray, chunk_bytes: np.ndarray, r: np.ndarray,
              alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> np.ndarray:
    """(a,) Σ bits(C) / Σ bytes(C) over chunks with r(C) ≤ α, for each α; NaN where no chunk qualifies."""
    out = np.full(len(alphas), np.nan)
    for i, alpha in enumerate(alphas):
        keep = r <= alpha + 1e-12  # exact for j/64 grids, tolerant of float rounding elsewhere
        nbytes = chunk_bytes[keep].sum()
        if nbytes > 0:
            out[i] = chunk_bits[keep].sum() / nbytes
    return out


@dataclass
class Leakage:
    """r(C) for every target chunk of a data set, and the α grid bpb(α) is read on."""

    s: np.ndarray  # (q,) longest shared run with any of the k_max neighbours
    r: np.ndarray  # (q,) s / |C|
    alphas: tuple[float, ...]

    def curve(self, data: EvalData, chunk_bits: np.ndarray) -> np.ndarray:
        """(a,) bpb(α) of one model's per-chunk bits."""
        return bpb_alpha(chunk_bits, data.chunk_bytes, self.r, self.alphas)

    def kept_bytes(self, data: EvalData) -> np.ndarray:
        """(a,) fraction of the data set's bytes in chunks with r(C) ≤ α."""
        total = float(data.chunk_bytes.sum())
        return np.array([data.chunk_bytes[self.r <= a + 1e-12].sum() / total for a in self.alphas])

    def summary(self) -> dict[str, float]:
        """Mean r(C) and the fraction of chunks above a few thresholds."""
        return {"mean_r": float(self.r.mean()), "frac_r_gt_0.125": float((self.r > 0.125 + 1e-12).mean()),
                "frac_r_gt_0.5": float((self.r > 0.5 + 1e-12).mean()), "frac_r_eq_1": float((self.r >= 1.0).mean())}


def measure_leakage(data: EvalData, neighbour_tokens: np.ndarray,
                    alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> Leakage:
    """r(C) of every target chunk given its neighbours' tokens (q, k, r), retrieved with C's own text."""
    s, r = leakage_ratios(data.target_chunks(), data.chunk_len, neighbour_tokens, data.pad_id)
    leak = Leakage(s, r, tuple(alphas))
    log.info("leakage: mean r(C) %.3f; %.1f%% of chunks share more than 12.5%% of their tokens",
             leak.r.mean(), 100 * leak.summary()["frac_r_gt_0.125"])
    return leak
