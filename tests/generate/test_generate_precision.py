"""Decoding under autocast reads pre-cast linear weights: the same logits, the caller's model untouched."""

from __future__ import annotations

import pytest
import torch

from burrow.device import autocast, autocast_weights
from burrow.generate import GenerationConfig, Generator
from burrow.model import build_model, load_model

CPU = torch.device("cpu")


def _decode_logits(model, tokens: torch.Tensor, neighbours: torch.Tensor | None, steps: int) -> list[torch.Tensor]:
    """Logits of a prefill over ``tokens`` and of ``steps`` greedy cached steps after it, under bf16 autocast."""
    cache = model.new_cache(1, tokens.shape[1] + steps)
    kwargs = {} if neighbours is None else {"neighbours": neighbours}
    out = []
    with torch.inference_mode(), autocast(CPU, torch.bfloat16):
        logits = model(tokens, cache=cache, **kwargs)
        out.append(logits.float())
        for _ in range(steps):
            logits = model(logits[:, -1:].argmax(-1), cache=cache, **kwargs)
            out.append(logits.float())
    return out


@pytest.mark.parametrize("retro", [True, False])
@pytest.mark.parametrize("tied", [False, True])
def test_precast_weights_give_autocasts_logits(retro: bool, tied: bool, tiny_config) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(300, retro=retro, max_seq_len=64)
    cfg.tie_embeddings = tied
    model = build_model(cfg).eval()
    twin = autocast_weights(model, torch.bfloat16)
    tokens = torch.randint(4, 300, (1, 13))  # the steps cross chunk boundaries (8-token chunks)
    neighbours = torch.randint(4, 300, (1, 8, 2, cfg.retrieved_len)) if retro else None
    for a, b in zip(_decode_logits(model, tokens, neighbours, 12), _decode_logits(twin, tokens, neighbours, 12),
                    strict=True):
        assert torch.equal(a, b)
    # Only the copy changed: its linear weights are bf16, its embedding (even when tied) fp32.
    assert twin.head.weight.dtype == torch.bfloat16 and twin.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert twin.embed.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert (model.head.weight is model.embed.weight) == tied


def test_no_autocast_no_copy(tiny_config) -> None:
    model = build_model(tiny_config(300, retro=False))
    assert autocast_weights(model, None) is model
    half = model.to(torch.bfloat16)
    assert autocast_weights(half, torch.bfloat16) is half  # nothing to cast: no copy


def test_generator_leaves_the_callers_model_in_fp32(gen_memory, retro_dir) -> None:
    """A bf16 generator decodes from its own pre-cast copy: the model it was given can still train in fp32."""
    model = load_model(retro_dir)
    gen = Generator(model, gen_memory, device="cpu", precision="bf16")
    res = gen.generate("Owls hunt", GenerationConfig(greedy=True, max_new_tokens=20))
    assert len(res.tokens) == 20 and res.chunks
    assert gen.model is not model and gen.model.head.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert Generator(model, gen_memory, device="cpu", precision="fp32").model is model  # no autocast: no copy


def test_the_precast_copy_follows_the_models_training(gen_memory, retro_dir) -> None:
    """Weights changed in place after the generator was made (a training step) reach the next generation."""
    model = load_model(retro_dir)
    gen = Generator(model, gen_memory, device="cpu", precision="bf16")
    greedy = GenerationConfig(greedy=True, max_new_tokens=8)
    before = gen.generate("Owls hunt", greedy)
    copy = gen.model
    assert gen.generate("Owls hunt", greedy).tokens == before.tokens and gen.model is copy  # unchanged: kept
    model.train()  # a training loop's mode; the copy still decodes in eval mode
    with torch.no_grad():
        model.head.weight.mul_(-1.0)  # what an optimizer step does: an in-place write
    after = gen.generate("Owls hunt", greedy)
    assert gen.model is not copy
    assert torch.equal(gen.model.head.weight, model.head.weight.to(torch.bfloat16))
    assert after.tokens != before.tokens and not gen.model.training
    import gc
    import weakref

    copy, held = gen.model, weakref.ref(model)
    del model
    gc.collect()
    assert held() is None  # the generator does not keep the caller's fp32 model alive
    assert gen.generate("Owls hunt", greedy).tokens == after.tokens and gen.model is copy
