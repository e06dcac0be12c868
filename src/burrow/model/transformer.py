"""The decoder-only transformer: Gopher's baseline, and RETRO when the config asks for it.

Shape legend: b batch, n tokens in this call, d model width, v vocabulary, l chunks, k neighbours,
r tokens per neighbour.

One class serves both: a RETRO config adds a retrieval encoder and a chunked cross-attention to the
blocks listed in ``cca_layers``; the decoder's parameter names are identical in both, so a
baseline's state dict loads into a RETRO model (RETRO-fitting). Block = FFW(CCA(ATTN(H), E)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from burrow.model.cache import LayerKV, ModelCache
from burrow.model.cca import ChunkedCrossAttention
from burrow.model.config import ModelConfig
from burrow.model.encoder import RetrievalEncoder
from burrow.model.layers import FeedForward, RMSNorm, Rope, SelfAttention, rope_tables
from burrow.model.loss import IGNORE_INDEX, linear_cross_entropy
from burrow.model.retro import RetrievalContext


class Block(nn.Module):
    """Pre-norm decoder block: causal self-attention, optional CCA, feed-forward."""

    def __init__(self, cfg: ModelConfig, has_cca: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.dropout)
        self.cca_norm = RMSNorm(cfg.d_model, cfg.norm_eps) if has_cca else None
        self.cca = ChunkedCrossAttention(cfg) if has_cca else None
        self.ffw_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffw = FeedForward(cfg.d_model, cfg.d_ffw, cfg.dropout)

    def forward(self, x: Tensor, rope: Rope, kv: LayerKV | None, retrieval: RetrievalContext | None) -> Tensor:
        """``x`` (b, n, d) -> (b, n, d)."""
        x = x + self.attn(self.attn_norm(x), rope, causal=True, kv=kv)
        if self.cca is not None and self.cca_norm is not None and retrieval is not None:
            retrieval.observe(x)  # the first CCA layer's H conditions the encoder
            if retrieval.encoded is not None and retrieval.window is not None:
                x = x + self.cca(self.cca_norm(x), retrieval.encoded, retrieval.encoded_mask, retrieval.window,
                                 retrieval.chunk_state)
        return x + self.ffw(self.ffw_norm(x))


class Transformer(nn.Module):
    """Baseline decoder or RETRO (``config.retro``); see :func:`build_model`."""

    #: ``forward(..., labels=...)`` returns the summed loss without materialising the logits.
    fused_loss = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        cca = set(config.cca_layers) if config.retro else set()
        self.blocks = nn.ModuleList(Block(config, has_cca=(i + 1) in cca) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        self.encoder = RetrievalEncoder(config) if config.retro else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2 * layers);
        CCA output projections zero when ``zero_init_cca_out`` (a fresh RETRO equals its baseline)."""
        cfg = self.config
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=cfg.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("attn.out.weight", "ffw.down.weight")):
                nn.init.normal_(p, std=out_std)
        for block in self.blocks:
            if isinstance(block, Block) and block.cca is not None and cfg.zero_init_cca_out:
                nn.init.zeros_(block.cca.attn.out.weight)

    def forward(self, tokens: Tensor, neighbours: Tensor | None = None, neighbour_mask: Tensor | None = None,
                cache: ModelCache | None = None, labels: Tensor | None = None,
                ignore_index: int = IGNORE_INDEX) -> Tensor:
        """Logits (b, n, v) for ``tokens`` (b, n); with ``labels`` (b, n), the summed cross-entropy instead.

        ``neighbours`` (b, l, k, r) token ids: ``neighbours[:, u]`` were retrieved with chunk u of
        the sequence (absolute chunk index, also with a cache) and condition tokens from the last
        token of chunk u onward. ``neighbour_mask`` (b, l, k) marks real neighbours (False = missing),
        or (b, l, k, r) real tokens; tokens equal to ``config.pad_id`` are masked in any case.
        Without neighbours a RETRO model runs as RETRO[OFF]. With ``cache`` (:meth:`new_cache`) the
        tokens continue the cached sequence and are appended to it. With ``labels`` (``ignore_index``
        where a position has no target) the result is the fp32 sum of the cross-entropy over the
        targets, computed by :func:`~burrow.model.loss.linear_cross_entropy` without the (b, n, v) logits.
        """
        x = self.hidden(tokens, neighbours, neighbour_mask, cache)  # (b, n, d)
        if labels is not None:
            return linear_cross_entropy(x, self.head.weight, labels, ignore_index)  # ()
        return self.head(x)  # (b, n, v)

    def hidden(self, tokens: Tensor, neighbours: Tensor | None = None, neighbour_mask: Tensor | None = None,
               cache: ModelCache | None = None) -> Tensor:
        """The final normed hidden states (b, n, d) that the output layer reads (:meth:`forward`'s
        arguments); a kNN-LM datastore's keys without paying for the (b, n, v) logits."""
        b, n = tokens.shape
        p0 = cache.length if cache is not None else 0
        if cache is not None:
            cache.check_step(b, n)
        rope = self._rope(p0, n, tokens.device, cache)
        retrieval = None
        if self.encoder is not None and (neighbours is not None or cache is not None):
            retrieval = RetrievalContext(self.encoder, self.embed, neighbours, neighbour_mask, p0, n, cache)
        x = self.embed(tokens)  # (b, n, d)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache.layers[i] if cache is not None else None, retrieval)
        if cache is not None:
            cache.length += n
        return self.norm(x)  # (b, n, d)

    def _rope(self, p0: int, n: int, device: torch.device, cache: ModelCache | None) -> Rope:
        """Rotary tables of positions p0 .. p0 + n - 1; with a cache, slices of one table built once."""
        cfg = self.config
        if cache is None:
            return rope_tables(torch.arange(p0, p0 + n, device=device), cfg.head_dim, cfg.rope_base)
        if cache.rope is None or cache.rope[0].device != device:
            cache.rope = rope_tables(torch.arange(cache.max_len, device=device), cfg.head_dim, cfg.rope_base)
        return cache.rope[0][p0:p0 + n], cache.rope[1][p0:p0 + n]

    def new_cache(self, batch_size: int, max_len: int | None = None) -> ModelCache:
        """An empty KV cache for ``batch_size`` sequences of up to ``max_len`` tokens (default
        ``config.max_seq_len``); pass it to :meth:`forward` step after step."""
        return ModelCache(self.config.n_layers, batch_size, max_len or self.config.max_seq_len)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` leaves out the token embedding and output projection
        (the vocabulary-sized matrices), the convention of the RETRO paper's baseline sizes."""
        seen: set[int] = set()
        total = 0
        for name, p in self.named_parameters(remove_duplicate=False):
            if id(p) in seen or (non_embedding and name in ("embed.weight", "head.weight")):
                continue
            seen.add(id(p))
            total += p.numel()
        return total


def build_model(config: ModelConfig) -> Transformer:
    """A freshly initialised baseline (``config.retro`` false) or RETRO model; no I/O."""
    return Transformer(config)
