"""KV cache for incremental decoding (generation), for the baseline and RETRO alike.

Shape legend: b batch, h heads, t cache capacity (max_len), e head width, d model width,
k neighbours, r retrieved tokens, c encoder width.

Usage::

    cache = model.new_cache(batch_size, max_len)     # empty; tensors are allocated on first use
    logits = model(prompt, neighbours=nb, cache=cache)      # prefill, any length
    logits = model(next_token, neighbours=nb, cache=cache)  # (b, 1); positions continue

Every row of the batch has the same length (no ragged batches). For RETRO the cache also keeps
the residual stream H at the first CCA layer (the encoder is conditioned on H of a whole chunk,
whose tokens arrive over several steps) and the encoded neighbours of the latest chunk, which the
next m - 1 tokens attend to; neighbours of chunk u are read once, when its last token is fed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from burrow.errors import BurrowError


class LayerKV:
    """Keys and values of one attention layer, (b, h, t, e) each, filled up to ``length``."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new keys/values (b, h, n, e); return all of them so far, (b, h, length, e)."""
        b, h, n, e = k.shape
        end = self.length + n
        if end > self.max_len:
            raise BurrowError(f"KV cache full: {end} tokens > max_len {self.max_len}; make a bigger cache")
        if self.k is None or self.v is None:
            self.k = k.new_empty(b, h, self.max_len, e)
            self.v = v.new_empty(b, h, self.max_len, e)
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


@dataclass
class EncodedChunk:
    """The encoded neighbours of one chunk, kept for the tokens that attend to them."""

    # Absolute chunk index u.
    chunk: int
    # Encoder output, (b, 1, k, r, c).
    encoded: Tensor
    # Which neighbour tokens are real (not missing, not padding), (b, 1, k, r) bool, or None when all are.
    mask: Tensor | None
    # Each CCA layer's rotated keys and values of ``encoded`` ((b, h, k*r, e) each), filled by the first
    # decoding step that attends to this chunk and reused by the next m - 1: projected once per chunk.
    cca_kv: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    # What every CCA layer derives from ``mask`` and the chunk's shape, the same for all of them and for
    # every step: the attention mask and per-row validity (None where all keys are real), and the
    # queries' rotary tables (m rows). Built by the first layer of the first step that attends.
    cca_static: tuple[Any, ...] | None = None


class ModelCache:
    """Per-layer KV caches plus RETRO's chunk state; see the module docstring for the protocol."""

    def __init__(self, n_layers: int, batch_size: int, max_len: int) -> None:
        self.batch_size = batch_size
        self.max_len = max_len
        self.layers = [LayerKV(max_len) for _ in range(n_layers)]
        # Tokens consumed so far; the next token's position.
        self.length = 0
        # RETRO: residual stream at the first CCA layer, (b, t, d).
        self.hidden: Tensor | None = None
        # RETRO: the latest encoded chunk.
        self.encoded: EncodedChunk | None = None
        # The decoder's rotary tables (cos, signed sin), (max_len, e) each: built on the first step, sliced after.
        self.rope: tuple[Tensor, Tensor] | None = None

    def store_hidden(self, h: Tensor) -> Tensor:
        """Write H (b, n, d) of the current step at ``length``; return H for all tokens (b, length+n, d)."""
        b, n, d = h.shape
        if self.hidden is None:
            self.hidden = h.new_empty(b, self.max_len, d)
        end = self.length + n
        self.hidden[:, self.length:end] = h.detach()
        return self.hidden[:, :end]

    def check_step(self, batch_size: int, n: int) -> None:
        """Raise a clear error before a step that does not fit this cache."""
        if batch_size != self.batch_size:
            raise BurrowError(f"cache was made for batch size {self.batch_size}, got {batch_size}")
        if self.length + n > self.max_len:
            raise BurrowError(
                f"KV cache full: {self.length + n} tokens > max_len {self.max_len}; make a bigger cache"
            )

