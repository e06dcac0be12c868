"""Chunked cross-attention (CCA), exactly as RETRO defines it, batched over chunks.

Shape legend: b batch, n tokens in this call, l attending chunks, m chunk length, k neighbours,
r tokens per neighbour, c encoder width, d decoder width, h heads, e head width.

The sequence is cut into chunks C_0, C_1, ... of m tokens. Attending chunk u is the last token of
C_u followed by the first m - 1 tokens of C_{u+1}; it attends to all k*r encoded tokens of the
neighbours retrieved with C_u. So token p attends to the neighbours of chunk u = (p + 1) // m - 1,
and the first m - 1 tokens of a sequence (u < 0) pass through unchanged. In shifted coordinates
s = p + 1 - m, attending chunk u is simply s in [u*m, (u+1)*m): a pad and a reshape, no loop.

Keys are masked per token: a missing neighbour and the padding inside a real one (a short last
chunk, a continuation past its document's end) are never attended to. A chunk with no real
neighbour token at all gets no update, so RETRO then equals RETRO[OFF] at its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from burrow.model.cache import EncodedChunk
from burrow.model.config import ModelConfig
from burrow.model.layers import CrossAttention, Rope, rope_tables


@dataclass(frozen=True)
class ChunkWindow:
    """Where the attending chunks fall in a call that feeds positions p0 .. p0 + n - 1."""

    # Index (within this call) of the first token that attends to any neighbours.
    first: int
    # Padding before that token to align it in its attending chunk (s_start mod m).
    pad: int
    # Absolute index of the first chunk whose neighbours are attended to.
    chunk0: int
    # Number of chunks whose neighbours this call attends to.
    n_chunks: int

    @staticmethod
    def of(p0: int, n: int, m: int) -> ChunkWindow | None:
        """The window for positions p0 .. p0+n-1, or None when none of them attends (p < m - 1)."""
        s_first = max(0, p0 + 1 - m)  # shifted position of the first attending token
        s_last = p0 + n - m
        if s_last < s_first:
            return None
        chunk0, chunk1 = s_first // m, s_last // m
        return ChunkWindow(s_first + m - 1 - p0, s_first % m, chunk0, chunk1 - chunk0 + 1)


class ChunkedCrossAttention(nn.Module):
    """One CCA layer: attending chunks of the decoder stream attend to their chunk's k neighbours."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn = CrossAttention(cfg.d_model, cfg.enc_d_model, cfg.n_heads, cfg.head_dim, cfg.dropout)

    def forward(self, x: Tensor, encoded: Tensor, mask: Tensor | None, window: ChunkWindow,
                state: EncodedChunk | None = None) -> Tensor:
        """``x`` (b, n, d) normed stream, ``encoded`` (b, l, k, r, c), ``mask`` (b, l, k, r) bool (real tokens).

        Returns the residual update (b, n, d): zero for tokens before ``window.first``. ``state``
        (decoding with a cache, one chunk): the chunk's cached state; this layer's keys and values of
        ``encoded`` and the masks and query rotary tables all layers share are computed on the
        chunk's first step and reused by its next tokens.
        """
        b, n, d = x.shape
        _, l, k, r, c = encoded.shape
        m = self.cfg.chunk_size
        n_att = n - window.first
        attn_mask, valid, q_rope = self._static(mask, b * l, x.device, state)
        if l == 1:  # one attending chunk (decoding): its tokens are the query rows, no padding to m
            q_in = x[:, window.first:] if window.first else x  # (b, n_att, d)
            if q_rope is not None and (window.pad or n_att != m):
                q_rope = (q_rope[0][window.pad:window.pad + n_att], q_rope[1][window.pad:window.pad + n_att])
        else:
            xa = F.pad(x[:, window.first:], (0, 0, window.pad, l * m - window.pad - n_att))  # (b, l*m, d)
            q_in = xa.view(b * l, m, d)  # (b*l, m, d): one row per attending chunk
        kv = state.cca_kv.get(id(self)) if state is not None else None
        if kv is None:
            ctx = encoded.reshape(b * l, k * r, c)  # (b*l, k*r, c): all neighbours of a chunk at once
            kv = self.attn.keys_values(ctx, self._k_rope(k, r, x.device))  # (b*l, h, k*r, e) each
            if state is not None:  # kept for the chunk's next steps: values laid out as SDPA reads them
                kv = (kv[0], kv[1].contiguous())  # (a strided view of the fused projection: 1.7x slower here)
                state.cca_kv[id(self)] = kv
        y = self.attn.attend_kv(q_in, kv, q_rope, attn_mask)  # (b*l, m or n_att, h*e)
        if valid is not None:  # chunks whose neighbours are all missing or padding get no update
            y = y * valid.to(y.dtype)[:, None, None]
        if l > 1:
            y = y.reshape(b, l * m, -1)[:, window.pad:window.pad + n_att]  # (b, n_att, h*e)
        out = self.attn.project(y)  # (b, n_att, d)
        return F.pad(out, (0, 0, window.first, 0)) if window.first else out  # (b, n, d)

    def _static(self, mask: Tensor | None, rows: int, device: torch.device,
                state: EncodedChunk | None) -> tuple[Tensor | None, Tensor | None, Rope | None]:
        """The attention mask, per-row validity and query rotary tables (see :meth:`_mask`, :meth:`_q_rope`).

        Decoding (``state``): built once per chunk and shared by every CCA layer and step; a chunk whose
        keys are all real then needs neither mask (one check per chunk, never in training).
        """
        if state is not None and state.cca_static is not None:
            return state.cca_static  # type: ignore[no-any-return]
        attn_mask, valid = self._mask(mask, rows)
        q_rope = self._q_rope(device)
        if state is not None:
            if valid is not None and attn_mask is not None and bool(valid.all()):
                attn_mask, valid = (None if bool(attn_mask.all()) else attn_mask), None
            state.cca_static = (attn_mask, valid, q_rope)
        return attn_mask, valid, q_rope

    @staticmethod
    def _mask(mask: Tensor | None, rows: int) -> tuple[Tensor | None, Tensor | None]:
        """(b, l, k, r) token mask -> SDPA mask (b*l, 1, 1, k*r) and per-chunk 'any real token' (b*l,)."""
        if mask is None:
            return None, None
        flat = mask.reshape(rows, -1)  # (b*l, k*r)
        valid = flat.any(dim=1)  # (b*l,)
        # A row with no valid key would give NaN; let it see everything and zero it afterwards.
        flat = flat | ~valid[:, None]
        return flat[:, None, None, :], valid

    def _q_rope(self, device: torch.device) -> Rope | None:
        """Query i of an attending chunk sits at position m - 1 + i of C_u's frame (see :meth:`_k_rope`)."""
        cfg = self.cfg
        if not cfg.cca_rotary:
            return None
        m = cfg.chunk_size
        return rope_tables(torch.arange(m - 1, 2 * m - 1, device=device), cfg.head_dim, cfg.rope_base)

    def _k_rope(self, k: int, r: int, device: torch.device) -> Rope | None:
        """Neighbour token j sits at position j (the neighbour's N resembles C_u), so a query's and a
        key's positions differ by a meaningful relative offset."""
        cfg = self.cfg
        if not cfg.cca_rotary:
            return None
        return rope_tables(torch.arange(r, device=device).repeat(k), cfg.head_dim, cfg.rope_base)
