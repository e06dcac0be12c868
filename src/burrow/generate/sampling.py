"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus), seeded.

Shape legend: v vocabulary.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from burrow.generate.config import GenerationConfig


def filter_logits(logits: Tensor, config: GenerationConfig) -> Tensor:
    """Temperature-scaled logits (v,) with everything outside top-k / the top-p nucleus set to -inf."""
    out = logits.float() / config.temperature
    if not math.isfinite(float(out.max())):  # a temperature so small (or large) that float32 over/underflows
        # in float64 (on the CPU: MPS has none) by the float64 temperature: the most likely token(s) 0, the rest
        # far below (or -inf)
        shifted = logits.detach().to("cpu", torch.float64)
        out = ((shifted - shifted.max()) / config.temperature).float().to(logits.device)
    if 0 < config.top_k < out.numel():
        kth = torch.topk(out, config.top_k).values[-1]
        out = out.masked_fill(out < kth, float("-inf"))
    if config.top_p < 1.0:
        out = _nucleus(out, config.top_p)
    return out


def _nucleus(out: Tensor, top_p: float) -> Tensor:
    """``out`` (v,) with every token outside the top-p nucleus set to -inf.

    In descending order of probability a token is dropped once the ones before it reach ``top_p``
    (the most likely always stays), so the nucleus is every token at least as likely as the last one
    kept. Only the sorted probabilities are needed to find that one, not the order: on a CPU they come
    from NumPy's vectorised sort (~0.08 ms for 8k entries) instead of ``torch.sort`` with indices
    (~0.6 ms per token, more than the decoding step of a small model). Tokens tied with the last kept
    one are all kept (a full argsort keeps an arbitrary part of them).
    """
    probs = torch.softmax(out, dim=-1)  # (v,)
    if probs.device.type == "cpu":  # NumPy: its sort is vectorised, and small ops cost less than torch's
        p = probs.numpy()
        return torch.from_numpy(np.where(p < _least_kept_numpy(p, top_p), np.float32(-np.inf), out.numpy()))
    return out.masked_fill(probs < _least_kept_torch(probs, top_p), float("-inf"))


def _least_kept_numpy(probs: np.ndarray, top_p: float) -> np.float32:
    """The probability of the least likely token in the nucleus of ``probs`` (v,)."""
    asc = np.sort(probs)
    upto = np.cumsum(asc, dtype=np.float64)  # the mass ahead of asc[j] (descending) is upto[-1] - upto[j]
    at = int(np.searchsorted(upto, upto[-1] - top_p, side="right"))  # v when top_p is below float64's step
    return asc[min(at, len(asc) - 1)]  # type: ignore[no-any-return]  # (NaN logits: multinomial says so)


def _least_kept_torch(probs: Tensor, top_p: float) -> Tensor:
    """:func:`_least_kept_numpy` on any device (a GPU sorts fast), as a 0-d tensor."""
    desc = torch.sort(probs, descending=True).values
    acc = torch.float32 if desc.device.type == "mps" else torch.float64  # MPS has no float64
    ahead = torch.cumsum(desc, dim=-1, dtype=acc) - desc.to(acc)  # (v,), non-decreasing
    return desc[max(int((ahead < top_p).sum()), 1) - 1]  # nothing is ahead of the first: at least one is kept


def sample_next(logits: Tensor, config: GenerationConfig, generator: torch.Generator | None) -> int:
    """The next token id from ``logits`` (v,) under ``config``; ``generator`` makes sampling repeatable."""
    if config.is_greedy:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(filter_logits(logits, config), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A torch random generator on ``device`` seeded with ``seed`` (independent of the global RNG)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
