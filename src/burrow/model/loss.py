"""The training loss without the full logits: output projection and cross-entropy fused, in chunks.

Shape legend: t target positions (b*n), d model width, v vocabulary, c positions per chunk.

The unfused loss materialises the (t, v) logits, a float copy, the log-softmax and their gradients:
for RETRO-172M at n = 2048 and v = 128k that is gigabytes per sequence. Here the positions are cut
into chunks of c rows; each chunk's logits (c, v) live only while that chunk's loss *and* its
gradients (softmax minus one-hot, times the weight / the hidden states) are computed, all in the
forward pass (the loss is a scalar, so its backward only scales the stored gradients). The same
three matmuls as the unfused path, the same autocast dtype for them, the softmax in fp32: the
numbers equal the unfused path's within rounding (tests/model/test_loss.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100  # label of a position without a target (torch's cross-entropy convention)
CHUNK_ELEMENTS = 1 << 23  # logits per chunk (c * v): 32 MB in fp32


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the surrounding autocast would run a matmul in (``x``'s own without autocast)."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def _chunk_rows(vocab: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // vocab)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over targets of CE(hidden @ weight.T, labels); gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, labels: Tensor, ignore_index: int,
                chunk_elements: int) -> Tensor:
        cdtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(cdtype), weight.to(cdtype)  # (t, d), (v, d)
            rows = _chunk_rows(w.shape[0], chunk_elements)
            grad_h = torch.empty_like(h)
            # a frozen output layer (a RETRO-fit of a burrow base) needs no (v, d) gradient: a third of the work
            need_w = bool(ctx.needs_input_grad[1])
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            for s in range(0, h.shape[0], rows):
                hc, y = h[s:s + rows], labels[s:s + rows]
                g, chunk_loss = _chunk_grad(hc, w, y, ignore_index)  # (c, v) d loss / d logits
                loss += chunk_loss
                torch.mm(g, w, out=grad_h[s:s + rows])  # (c, d)
                if grad_w is None:
                    continue
                if g.dtype == torch.float32:
                    grad_w.addmm_(g.t(), hc)  # (v, d)
                else:  # like the unfused path: the matmul in the autocast dtype, accumulated in fp32
                    grad_w.add_(torch.mm(g.t(), hc))
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (grad_h.to(h_dtype) * grad_out, grad_w.to(w_dtype) * grad_out if grad_w is not None else None,
                None, None, None)


def _chunk_grad(h: Tensor, w: Tensor, y: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(softmax - one-hot) of one chunk's logits in ``h``'s dtype (zero rows without a target), and its loss."""
    logits = torch.mm(h, w.t()).float()  # (c, v)
    valid = y != ignore_index  # (c,)
    safe = torch.where(valid, y, 0)
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    target = logits.gather(1, safe[:, None]).squeeze(1)  # (c,)
    loss = ((lse - target) * valid).sum()
    probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
    probs[torch.arange(len(y), device=y.device), safe] -= 1.0
    probs.mul_(valid[:, None])
    return probs.to(h.dtype), loss


def _chunked_loss(hidden: Tensor, weight: Tensor, labels: Tensor, ignore_index: int, chunk_elements: int) -> Tensor:
    """The summed loss alone (no gradient wanted): chunked, so evaluation never holds (t, v) either."""
    rows = _chunk_rows(weight.shape[0], chunk_elements)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for s in range(0, hidden.shape[0], rows):
        logits = F.linear(hidden[s:s + rows], weight).float()  # (c, v)
        total += F.cross_entropy(logits, labels[s:s + rows], ignore_index=ignore_index, reduction="sum")
    return total


def linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX,
                         chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """Summed cross-entropy of ``hidden @ weight.T`` (fp32 scalar) against ``labels``, never holding (t, v).

    ``hidden`` (..., d), ``weight`` (v, d), ``labels`` (...) int64 with ``ignore_index`` where a position has
    no target. Equal to ``F.cross_entropy(F.linear(hidden, weight).float(), labels, reduction="sum")``.
    """
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)  # (t, d), (t,)
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        return _chunked_loss(h, weight, y, ignore_index, chunk_elements)
    loss: Tensor = _LinearCrossEntropy.apply(h, weight, y, ignore_index, chunk_elements)
    return loss


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def loss_sum(model: nn.Module, tokens: Tensor, labels: Tensor, neighbours: Tensor | None = None,
             neighbour_mask: Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Summed next-token cross-entropy (fp32) of any retrieval LM over ``labels`` (b, n).

    A model that declares ``fused_loss`` (burrow's :class:`~burrow.model.transformer.Transformer`, also
    wrapped in DDP or torch.compile, which are called, not bypassed) computes it fused
    (:func:`linear_cross_entropy`) when given ``labels``; any other model (a RETRO-fitted Hugging Face
    LM) through its logits.
    """
    if getattr(unwrap(model), "fused_loss", False):
        out: Tensor = model(tokens, neighbours=neighbours, neighbour_mask=neighbour_mask, labels=labels,
                            ignore_index=ignore_index)
        return out
    logits = model(tokens, neighbours=neighbours, neighbour_mask=neighbour_mask)  # (b, n, v)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=ignore_index,
                           reduction="sum")
