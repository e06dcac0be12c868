"""RETRO's retrieval encoder: a small bidirectional transformer over each retrieved neighbour.

Shape legend: b batch, l chunks, k neighbours per chunk, r tokens per neighbour ([chunk,
continuation], 128), m chunk length, d decoder width, c encoder width.

Each neighbour of chunk u is encoded on its own (self-attention within its r tokens) and, in the
layers listed in ``enc_cross_layers`` (layer 1 by default), cross-attends to H_u: the decoder's
residual stream over the m tokens of chunk u, taken at the first CCA layer. The k neighbours of a
chunk share H_u, so they are folded into one query sequence of k*r tokens (no copy of H_u).
Token embeddings are the decoder's (passed in), projected from d to c.

Padding inside a neighbour (a document's short last chunk, a continuation past the document's end)
is masked out of the self-attention keys when a token mask is given; a neighbour that is all
padding attends to all of its tokens instead (no NaN) and chunked cross-attention then ignores it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from burrow.model.config import ModelConfig
from burrow.model.layers import CrossAttention, FeedForward, RMSNorm, Rope, SelfAttention, rope_tables


class EncoderLayer(nn.Module):
    """Bidirectional self-attention, optional cross-attention to H_u, feed-forward; pre-norm."""

    def __init__(self, cfg: ModelConfig, cross: bool) -> None:
        super().__init__()
        c = cfg.enc_d_model
        self.attn_norm = RMSNorm(c, cfg.norm_eps)
        self.attn = SelfAttention(c, cfg.enc_n_heads, cfg.enc_head_dim, cfg.dropout)
        self.cross_norm = RMSNorm(c, cfg.norm_eps) if cross else None
        self.context_norm = RMSNorm(cfg.d_model, cfg.norm_eps) if cross else None
        self.cross = CrossAttention(c, cfg.d_model, cfg.enc_n_heads, cfg.enc_head_dim, cfg.dropout) if cross else None
        self.ffw_norm = RMSNorm(c, cfg.norm_eps)
        self.ffw = FeedForward(c, cfg.enc_d_ffw, cfg.dropout)

    def forward(self, x: Tensor, h: Tensor, ropes: dict[str, Rope | None], key_mask: Tensor | None = None) -> Tensor:
        """``x`` (b, l, k, r, c) neighbours, ``h`` (b, l, m, d) chunk activations -> (b, l, k, r, c);
        ``key_mask`` (b*l*k, 1, 1, r) bool: the tokens each neighbour's self-attention may read."""
        b, l, k, r, c = x.shape
        flat = x.reshape(b * l * k, r, c)  # (b*l*k, r, c): each neighbour attends within itself
        self_rope = ropes["self"]
        assert self_rope is not None
        x = x + self.attn(self.attn_norm(flat), self_rope, causal=False, key_mask=key_mask).view(b, l, k, r, c)
        if self.cross is not None and self.cross_norm is not None and self.context_norm is not None:
            q = self.cross_norm(x).reshape(b * l, k * r, c)  # (b*l, k*r, c): k neighbours share H_u
            ctx = self.context_norm(h).reshape(b * l, -1, h.shape[-1])  # (b*l, m, d)
            y = self.cross.attend(q, ctx, ropes["q"], ropes["k"])  # (b*l, k*r, h*e)
            x = x + self.cross.project(y).view(b, l, k, r, c)
        return x + self.ffw(self.ffw_norm(x))


class RetrievalEncoder(nn.Module):
    """Encodes neighbour tokens (b, l, k, r) conditioned on chunk activations (b, l, m, d)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj_in = nn.Linear(cfg.d_model, cfg.enc_d_model, bias=False)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg, cross=(i + 1) in cfg.enc_cross_layers) for i in range(cfg.enc_n_layers)
        )
        self.norm = RMSNorm(cfg.enc_d_model, cfg.norm_eps)

    def forward(self, neighbour_emb: Tensor, h: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """``neighbour_emb`` (b, l, k, r, d) embedded neighbours, ``h`` (b, l, m, d) -> (b, l, k, r, c).

        ``token_mask`` (b, l, k, r) bool marks real tokens (False: padding, never attended to).
        """
        _, _, k, r, _ = neighbour_emb.shape
        x = self.proj_in(neighbour_emb)  # (b, l, k, r, c)
        ropes = self._ropes(k, r, h.shape[2], h.device)
        key_mask = self_attention_mask(token_mask)
        for layer in self.layers:
            x = layer(x, h, ropes, key_mask)
        return self.norm(x)

    def _ropes(self, k: int, r: int, m: int, device: torch.device) -> dict[str, Rope | None]:
        """Rotary tables: neighbour token j sits at position j, chunk token i at position i.

        Neighbour [N, F] is aligned with the retrieving chunk C_u (N resembles C_u), so the relative
        offset j - i is meaningful for the cross-attention as well as within a neighbour.
        """
        cfg = self.cfg
        pos_r = torch.arange(r, device=device)
        self_rope = rope_tables(pos_r, cfg.enc_head_dim, cfg.rope_base)
        if not cfg.cca_rotary:
            return {"self": self_rope, "q": None, "k": None}
        q_rope = rope_tables(pos_r.repeat(k), cfg.enc_head_dim, cfg.rope_base)  # (k*r, e/2)
        k_rope = rope_tables(torch.arange(m, device=device), cfg.enc_head_dim, cfg.rope_base)
        return {"self": self_rope, "q": q_rope, "k": k_rope}


def self_attention_mask(token_mask: Tensor | None) -> Tensor | None:
    """(b, l, k, r) real-token mask -> SDPA key mask (b*l*k, 1, 1, r); None without a mask.

    A neighbour with no real token would give NaN (softmax over no key): it attends to all of its
    tokens instead; its encoding is then unused, as chunked cross-attention masks all of it.
    """
    if token_mask is None:
        return None
    flat = token_mask.reshape(-1, token_mask.shape[-1])  # (b*l*k, r)
    flat = flat | ~flat.any(dim=1, keepdim=True)
    return flat[:, None, None, :]
