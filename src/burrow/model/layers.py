"""Layers shared by the decoder, the retrieval encoder and chunked cross-attention.

Shape legend: b batch, n query tokens, s key tokens, h heads, e head width, d model width,
f feed-forward width.

Attention always goes through ``scaled_dot_product_attention`` (flash/fused kernels on CPU and
CUDA); positions are rotary, applied to queries and keys only, so any attention stays relative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from burrow.model.cache import LayerKV

Rope = tuple[Tensor, Tensor]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (Gopher uses it instead of LayerNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)  # a no-op .to costs 4 µs
        return F.rms_norm(x, (x.shape[-1],), w, self.eps)


def rope_tables(positions: Tensor, head_dim: int, base: float) -> Rope:
    """Rotary tables for ``positions``: cos and signed sin, each (n, e), float32, on ``positions``' device.

    Full width with the sign folded in, so :func:`apply_rope` is two multiplies and an add.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (n, e/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)  # (n, e) each


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate ``x`` (..., n, e) by its positions' angles (half-split layout):
    [x1 cos - x2 sin, x2 cos + x1 sin] for the halves x1, x2 of the head width."""
    cos, sin = rope
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)  # (..., n, e): [x2, x1] in one copy
    return x * cos + swapped * sin


def dropout(drop: nn.Dropout, x: Tensor) -> Tensor:
    """``drop(x)``, skipped where it is the identity (evaluation, or p = 0): a decoding step calls it
    three times per block, each a module call worth ~7 µs of a 2 ms step on small models."""
    return drop(x) if drop.training and drop.p > 0 else x


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(b, n, h*e) -> (b, h, n, e)."""
    b, n, _ = x.shape
    return x.view(b, n, n_heads, -1).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(b, h, n, e) -> (b, n, h*e)."""
    b, h, n, e = x.shape
    return x.transpose(1, 2).reshape(b, n, h * e)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection; causal or bidirectional."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim, bias=False)
        self.out = nn.Linear(n_heads * head_dim, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, rope: Rope, causal: bool = True, kv: LayerKV | None = None,
                key_mask: Tensor | None = None) -> Tensor:
        """``x`` (b, n, d) -> (b, n, d). With ``kv`` the new keys are appended to the cache.

        ``key_mask`` (b, 1, 1, n) bool: keys that may be attended to (bidirectional attention only;
        every row needs at least one True: a row without keys is NaN on some kernels, zero on others).
        """
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, b, h, n, e)
        q, k = apply_rope(qkv[:2], rope).unbind(0)  # queries and keys rotated in one pass: (b, h, n, e) each
        v = qkv[2]
        mask = key_mask
        if key_mask is not None and (causal or kv is not None):
            raise ValueError("key_mask is for bidirectional attention without a cache")
        if kv is not None:
            start = kv.length
            k, v = kv.append(k, v)  # (b, h, start + n, e)
            if start > 0:
                causal = False
                if n > 1:  # token i of this step sees every cached key and new keys up to itself
                    keys = torch.arange(start + n, device=x.device)
                    mask = keys[None, :] <= (start + torch.arange(n, device=x.device))[:, None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (b, h, n, e)
        return dropout(self.drop, self.out(_merge_heads(y)))


class CrossAttention(nn.Module):
    """Multi-head attention from queries (d_q wide) to a context (d_kv wide); fused KV projection.

    Used by chunked cross-attention (queries: an attending chunk, context: k encoded neighbours)
    and by the encoder (queries: neighbour tokens, context: the retrieving chunk's activations).
    """

    def __init__(self, d_q: int, d_kv: int, n_heads: int, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.q = nn.Linear(d_q, n_heads * head_dim, bias=False)
        self.kv = nn.Linear(d_kv, 2 * n_heads * head_dim, bias=False)
        self.out = nn.Linear(n_heads * head_dim, d_q, bias=False)
        self.drop = nn.Dropout(dropout)

    def attend(self, x: Tensor, context: Tensor, q_rope: Rope | None, k_rope: Rope | None,
               mask: Tensor | None = None) -> Tensor:
        """``x`` (b, n, d_q), ``context`` (b, s, d_kv), ``mask`` (b, 1, 1, s) bool -> (b, n, h*e).

        Returns the heads merged but *before* the output projection, so callers can drop rows
        (padding) before paying for it.
        """
        return self.attend_kv(x, self.keys_values(context, k_rope), q_rope, mask)

    def keys_values(self, context: Tensor, k_rope: Rope | None) -> tuple[Tensor, Tensor]:
        """Keys (rotated by ``k_rope``) and values of ``context`` (b, s, d_kv): (b, h, s, e) each."""
        b, s, _ = context.shape
        kv = self.kv(context).view(b, s, 2, self.n_heads, self.head_dim)  # (b, s, 2, h, e)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (b, h, s, e)
        return (apply_rope(k, k_rope) if k_rope is not None else k), v

    def attend_kv(self, x: Tensor, kv: tuple[Tensor, Tensor], q_rope: Rope | None,
                  mask: Tensor | None = None) -> Tensor:
        """:meth:`attend` with keys and values from :meth:`keys_values` (computed once, reused)."""
        q = _split_heads(self.q(x), self.n_heads)  # (b, h, n, e)
        if q_rope is not None:
            q = apply_rope(q, q_rope)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)  # (b, h, n, e)
        return _merge_heads(y)

    def project(self, y: Tensor) -> Tensor:
        """Output projection of :meth:`attend`'s result: (..., h*e) -> (..., d_q)."""
        return dropout(self.drop, self.out(y))


class FeedForward(nn.Module):
    """Two-layer GELU MLP, 4 x d_model wide in the papers."""

    def __init__(self, d_model: int, d_ffw: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ffw, bias=False)
        self.down = nn.Linear(d_ffw, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(self.drop, self.down(F.gelu(self.up(x), approximate="tanh")))
