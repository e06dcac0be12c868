"""Greedy generation with the KV cache equals generation that recomputes the whole sequence each step."""

from __future__ import annotations

import pytest

from burrow.generate import GenerationConfig, Generator
from burrow.model import load_model


@pytest.mark.parametrize("which", ["retro", "base"])
@pytest.mark.parametrize("prompt", ["", "Owls hunt", "Mount Etna in Sicily erupts often, and its lava flows"])
def test_cached_greedy_equals_recomputed(which: str, prompt: str, gen_memory, retro_dir, base_dir) -> None:
    model = load_model(retro_dir if which == "retro" else base_dir)
    gen = Generator(model, gen_memory, device="cpu", precision="fp32")
    cached = gen.generate(prompt, GenerationConfig(greedy=True, max_new_tokens=30))
    full = gen.generate(prompt, GenerationConfig(greedy=True, max_new_tokens=30, kv_cache=False))
    assert len(cached.tokens) == 30 and cached.finish_reason == "length"
    assert cached.tokens == full.tokens
    assert cached.text == full.text
    assert bool(cached.chunks) == (which == "retro")


def test_retrieval_changes_a_retro_models_output(gen_memory, retro_dir) -> None:
    """With non-zero CCA, RETRO[ON] and RETRO[OFF] differ: the neighbours really reach the model."""
    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    prompt = "Bread is baked from flour, water, salt and yeast."
    on = gen.generate(prompt, GenerationConfig(greedy=True, max_new_tokens=24))
    off = gen.generate(prompt, GenerationConfig(greedy=True, max_new_tokens=24, retrieval=False))
    assert on.tokens != off.tokens
    assert off.chunks == [] and not off.retrieval


def test_generation_stops_at_max_seq_len(gen_memory, tiny_config) -> None:
    import torch

    from burrow.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config(gen_memory.tokenizer.vocab_size, retro=True, max_seq_len=24))
    gen = Generator(model, gen_memory, device="cpu", precision="fp32")
    prompt_len = len(gen_memory.tokenizer.encode("Owls hunt at night"))
    res = gen.generate("Owls hunt at night", GenerationConfig(greedy=True, max_new_tokens=100))
    assert res.finish_reason == "max_seq_len"
    assert gen_memory.chunk_size + prompt_len + len(res.tokens) == 24  # the document-start chunk, prompt, output
