"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus), seeded.

Shape legend: v vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from burrow.generate.config import GenerationConfig


def filter_logits(logits: Tensor, config: GenerationConfig) -> Tensor:
    """Temperature-scaled logits (v,) with everything outside top-k / the top-p nucleus set to -inf."""
    out = logits.float() / config.temperature
    if 0 < config.top_k < out.numel():
        kth = torch.topk(out, config.top_k).values[-1]
        out = out.masked_fill(out < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already reach p; the most likely one always stays.
        drop = (torch.cumsum(probs, dim=-1) - probs) >= config.top_p
        out = out.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return out


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
