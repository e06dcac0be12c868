"""How retrieval flows through the decoder in one forward call (RETRO = decoder + encoder + CCA).

Shape legend: b batch, n tokens in this call, l chunks, m chunk length, k neighbours, r tokens per
neighbour, d decoder width, c encoder width.

The decoder (:mod:`burrow.model.transformer`) is the same class for the baseline and RETRO. For
RETRO it creates one :class:`RetrievalContext` per call; the first CCA layer hands it its residual
stream H (after self-attention, as in the paper's pseudo-code), which conditions the encoder:
E = ENCODER(RET(C_u), H_u) for the chunks this call attends to; every CCA layer then reads E.
Without neighbours the CCA layers are skipped (RETRO[OFF]).

Which neighbour tokens are real, (b, l, k, r): the caller's mask (per neighbour (b, l, k), or per
token (b, l, k, r)) and, when the config names a ``pad_id``, every token that is not padding. The
encoder's self-attention and every CCA layer read only real tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from burrow.errors import BurrowError
from burrow.model.cache import EncodedChunk, ModelCache
from burrow.model.cca import ChunkWindow
from burrow.model.encoder import RetrievalEncoder


def check_neighbours(neighbours: Tensor, mask: Tensor | None, batch: int, needed: int) -> None:
    """Raise a clear error unless ``neighbours`` is (b, l >= needed, k, r) ids and ``mask`` (b, l, k) or
    (b, l, k, r)."""
    if neighbours.dim() != 4 or neighbours.shape[0] != batch:
        raise BurrowError(f"neighbours must be (batch={batch}, chunks, k, r) token ids, got {tuple(neighbours.shape)}")
    if neighbours.dtype.is_floating_point:
        raise BurrowError("neighbours must be integer token ids, not floats")
    if neighbours.shape[1] < needed:
        raise BurrowError(
            f"neighbours cover {neighbours.shape[1]} chunks but {needed} are attended to; "
            "pass neighbours for every complete chunk (mask missing ones with neighbour_mask)"
        )
    if mask is not None and tuple(mask.shape) not in (tuple(neighbours.shape[:3]), tuple(neighbours.shape)):
        raise BurrowError(f"neighbour_mask must be {tuple(neighbours.shape[:3])} (per neighbour) or "
                          f"{tuple(neighbours.shape)} (per token), got {tuple(mask.shape)}")


class RetrievalContext:
    """Neighbours and their encoding for one forward call over positions p0 .. p0 + n - 1."""

    def __init__(self, encoder: RetrievalEncoder, embed: nn.Embedding, neighbours: Tensor | None,
                 mask: Tensor | None, p0: int, n: int, cache: ModelCache | None) -> None:
        self.encoder, self.embed, self.cache = encoder, embed, cache
        self.chunk_size, self.pad_id = encoder.cfg.chunk_size, encoder.cfg.pad_id
        self.window = ChunkWindow.of(p0, n, self.chunk_size) if neighbours is not None else None
        self.neighbours, self.mask = neighbours, None if mask is None else mask.bool()
        if neighbours is not None and self.window is not None:
            check_neighbours(neighbours, mask, neighbours.shape[0], self.window.chunk0 + self.window.n_chunks)
        # Encoder output for the window's chunks, (b, l, k, r, c), and its real-token mask (b, l, k, r).
        self.encoded: Tensor | None = None
        self.encoded_mask: Tensor | None = None
        # Decoding one chunk with a cache: its cached state (the CCA layers' projected keys and values,
        # masks, rotary tables), kept across steps.
        self.chunk_state: EncodedChunk | None = None
        self._observed = False

    def observe(self, h: Tensor) -> None:
        """Called by every CCA layer with its stream H (b, n, d); acts at the first one only."""
        if self._observed:
            return
        self._observed = True
        h_all = self.cache.store_hidden(h) if self.cache is not None else h  # (b, p0 + n, d)
        if self.window is not None:
            self.encoded, self.encoded_mask = self._encode(h_all)

    def _encode(self, h_all: Tensor) -> tuple[Tensor, Tensor | None]:
        """Encode the neighbours of the window's chunks, reusing the cache's latest encoded chunk."""
        assert self.window is not None and self.neighbours is not None
        m, (b, _, d) = self.chunk_size, h_all.shape
        c0, c1 = self.window.chunk0, self.window.chunk0 + self.window.n_chunks
        prev = self.cache.encoded if self.cache is not None else None
        reuse = prev if prev is not None and prev.chunk == c0 else None
        start = c0 + 1 if reuse is not None else c0
        parts: list[tuple[Tensor, Tensor | None]] = [] if reuse is None else [(reuse.encoded, reuse.mask)]
        if start < c1:
            h_chunks = h_all[:, start * m:c1 * m].reshape(b, c1 - start, m, d)  # (b, l, m, d)
            nb_emb = self.embed(self.neighbours[:, start:c1])  # (b, l, k, r, d)
            mask = self._token_mask(start, c1)  # (b, l, k, r) or None
            # A per-neighbour mask alone masks no token inside a neighbour: the encoder runs unmasked.
            per_token = self.pad_id is not None or (self.mask is not None and self.mask.dim() == 4)
            parts.append((self.encoder(nb_emb, h_chunks, mask if per_token else None), mask))  # (b, l, k, r, c)
        encoded = torch.cat([p[0] for p in parts], dim=1) if len(parts) > 1 else parts[0][0]
        mask_out = _cat_masks(parts) if len(parts) > 1 else parts[0][1]
        if self.cache is not None:
            if reuse is not None and start >= c1:  # the same single chunk as the last call: keep its CCA keys
                self.chunk_state = reuse
            else:
                last_mask = None if mask_out is None else mask_out[:, -1:]
                self.cache.encoded = EncodedChunk(c1 - 1, encoded[:, -1:].detach(), last_mask)
                if c1 - c0 == 1:
                    self.chunk_state = self.cache.encoded
        return encoded, mask_out

    def _token_mask(self, start: int, end: int) -> Tensor | None:
        """Real tokens (b, l, k, r) of the neighbours of chunks start .. end - 1; None: all are real."""
        assert self.neighbours is not None
        nb = self.neighbours[:, start:end]  # (b, l, k, r)
        mask = None
        if self.mask is not None:
            mask = self.mask[:, start:end]
            mask = mask[..., None].expand(nb.shape) if mask.dim() == 3 else mask
        if self.pad_id is not None:
            real = nb != self.pad_id
            mask = real if mask is None else mask & real
        return mask


def _cat_masks(parts: list[tuple[Tensor, Tensor | None]]) -> Tensor | None:
    """Concatenate per-part (b, l, k, r) masks along l; None when no part has a mask."""
    if all(mask is None for _, mask in parts):
        return None
    full = [mask if mask is not None else torch.ones(enc.shape[:4], dtype=torch.bool, device=enc.device)
            for enc, mask in parts]
    return torch.cat(full, dim=1)
