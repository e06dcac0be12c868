"""The fused, chunked loss equals the unfused logits + cross-entropy path: value and every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from burrow.model import build_model
from burrow.model.loss import linear_cross_entropy, loss_sum
from burrow.presets import get_preset


def _unfused(hidden, weight, labels):
    return F.cross_entropy(F.linear(hidden, weight).float().flatten(0, 1), labels.flatten(), reduction="sum")


@pytest.mark.parametrize("chunk_elements", [7 * 50, 1 << 20])  # many ragged chunks; one chunk
def test_linear_cross_entropy_equals_unfused(chunk_elements: int) -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (3, 11), generator=g)
    labels[0, :4] = -100  # positions without a target
    fused = linear_cross_entropy(hidden, weight, labels, chunk_elements=chunk_elements)
    (fused * 0.5).backward()  # a scaled upstream gradient
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref = _unfused(hidden, weight, labels)
    (ref * 0.5).backward()
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(gh, hidden.grad)
    torch.testing.assert_close(gw, weight.grad)
    with torch.no_grad():  # evaluation: the loss alone, chunked the same way
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, labels, chunk_elements=chunk_elements), ref)
    frozen = weight.detach()  # a RETRO-fit's frozen output layer: no (v, d) gradient is made, the same one for h
    hidden.grad = None
    (linear_cross_entropy(hidden, frozen, labels, chunk_elements=chunk_elements) * 0.5).backward()
    torch.testing.assert_close(hidden.grad, gh)


def test_linear_cross_entropy_bf16_autocast_close_to_unfused() -> None:
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(64, 32, generator=g, requires_grad=True)
    weight = torch.randn(100, 32, generator=g, requires_grad=True)
    labels = torch.randint(0, 100, (64,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = linear_cross_entropy(hidden, weight, labels, chunk_elements=1000)
        ref = F.cross_entropy(F.linear(hidden, weight).float(), labels, reduction="sum")
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, ref, rtol=1e-3, atol=1e-2)
    fused.backward()
    gw = weight.grad.clone()
    weight.grad = None
    ref.backward()
    assert torch.nn.functional.cosine_similarity(gw.flatten(), weight.grad.flatten(), dim=0) > 0.999


@pytest.mark.parametrize("preset", ["tiny", "retro-tiny"])
def test_model_loss_equals_logits_loss(preset: str) -> None:
    """``model(..., labels=...)`` (what training uses) equals cross-entropy of the model's logits, with
    the same parameter gradients; tied embeddings included."""
    cfg = get_preset(preset, vocab_size=96, max_seq_len=64, tie_embeddings=True)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():  # a fresh RETRO's CCA output is zero: perturb so every path matters
        torch.nn.init.normal_(p, std=0.05)
    tokens = torch.randint(0, 96, (2, 64))
    labels = torch.roll(tokens, -1, dims=1)
    labels[:, -1] = -100
    nb = torch.randint(0, 96, (2, 64 // cfg.chunk_size, 2, cfg.retrieved_len)) if cfg.retro else None
    fused = loss_sum(model, tokens, labels, neighbours=nb)
    fused.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = F.cross_entropy(model(tokens, neighbours=nb).flatten(0, 1), labels.flatten(), reduction="sum")
    ref.backward()
    torch.testing.assert_close(fused, ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, msg=n)


def test_hidden_is_what_the_output_layer_reads() -> None:
    """``hidden`` (kNN-LM keys without the logits) is the output layer's input, and forward = head(hidden)."""
    cfg = get_preset("retro-tiny", vocab_size=96, max_seq_len=64)
    model = build_model(cfg).eval()
    tokens = torch.randint(0, 96, (2, 64))
    nb = torch.randint(0, 96, (2, 64 // cfg.chunk_size, 2, cfg.retrieved_len))
    seen = []
    handle = model.head.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    logits = model(tokens, neighbours=nb)
    handle.remove()
    h = model.hidden(tokens, neighbours=nb)
    torch.testing.assert_close(h, seen[0], rtol=0, atol=0)
    torch.testing.assert_close(model.head(h), logits, rtol=0, atol=0)
