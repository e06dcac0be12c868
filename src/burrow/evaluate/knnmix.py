"""The kNN-LM's mixture, p = λ·p_kNN + (1 − λ)·p_LM, and the choice of λ and T (numpy, on searched queries).

Shape legend: Q scored evaluation tokens, K neighbours per query.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from burrow.evaluate.bpb import LN2

if TYPE_CHECKING:
    from burrow.evaluate.knnlm import KnnLMConfig


@dataclass
class KnnQueries:
    """Per scored token of a data set (documents in order, tokens in order): what the mixture needs."""

    lm_logp: np.ndarray  # (Q,) float64 ln p_LM(target)
    dists: np.ndarray  # (Q, K) float32 squared L2 to the K nearest entries (inf where missing)
    match: np.ndarray  # (Q, K) bool: that entry's next token is the target
    doc: np.ndarray  # (Q,) int64 document of each token


def mixture_bits(q: KnnQueries, lam: float, temperature: float) -> np.ndarray:
    """(Q,) bits of each token under p = λ·p_kNN + (1 − λ)·p_LM, p_kNN = softmax(−dist / T) summed over matches."""
    return _mix(_log_knn(q, temperature), q.lm_logp, lam)


def _log_knn(q: KnnQueries, temperature: float) -> np.ndarray:
    """(Q,) ln p_kNN(target) at temperature T (−inf where no neighbour matches): the costly (Q, K) part."""
    logits = np.where(np.isfinite(q.dists), -q.dists.astype(np.float64) / temperature, -np.inf)  # (Q, K)
    top = logits.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(logits - top)
    total = e.sum(axis=1)
    hit = np.where(q.match, e, 0.0).sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(hit) - np.log(np.maximum(total, 1e-300)))


def _mix(log_knn: np.ndarray, lm_logp: np.ndarray, lam: float) -> np.ndarray:
    """(Q,) bits of the λ-mixture of ln p_kNN and ln p_LM."""
    if lam <= 0.0:
        mixed = lm_logp
    elif lam >= 1.0:
        mixed = log_knn
    else:
        mixed = np.logaddexp(np.log(lam) + log_knn, np.log1p(-lam) + lm_logp)
    return np.asarray(-mixed / LN2)


def tune(q: KnnQueries, rows: np.ndarray, config: KnnLMConfig) -> tuple[float, float]:
    """(λ, T) minimising the bits of tokens ``rows`` over the config's grids (p_kNN once per T)."""
    sub = subset(q, rows)

    def candidates() -> Iterator[tuple[float, float, float]]:
        for t in config.temperatures:
            log_knn = _log_knn(sub, t)
            for lam in config.lambdas:
                yield float(_mix(log_knn, sub.lm_logp, lam).sum()), lam, t

    best = min(candidates())
    return best[1], best[2]


def subset(q: KnnQueries, rows: np.ndarray) -> KnnQueries:
    """The queries of tokens ``rows``."""
    return KnnQueries(q.lm_logp[rows], q.dists[rows], q.match[rows], q.doc[rows])
