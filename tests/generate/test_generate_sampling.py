"""Sampling: seeded runs repeat, filters keep what they should, bad options are clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from burrow.errors import BurrowError
from burrow.generate import GenerationConfig, Generator
from burrow.generate.sampling import filter_logits, sample_next
from burrow.model import load_model


def test_seeded_sampling_is_reproducible(gen_memory, retro_dir) -> None:
    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    cfg = GenerationConfig(max_new_tokens=25, temperature=1.3, top_p=0.95, seed=7)
    a, b = gen.generate("Owls", cfg), gen.generate("Owls", cfg)
    c = gen.generate("Owls", GenerationConfig(max_new_tokens=25, temperature=1.3, top_p=0.95, seed=8))
    assert a.tokens == b.tokens and a.text == b.text and a.seed == 7
    assert a.tokens != c.tokens
    drawn = gen.generate("Owls", GenerationConfig(max_new_tokens=5))
    assert drawn.seed is not None  # a drawn seed is reported, so the run can be repeated
    again = gen.generate("Owls", GenerationConfig(max_new_tokens=5, seed=drawn.seed))
    assert again.tokens == drawn.tokens


def test_filters_keep_exactly_top_k_and_the_nucleus() -> None:
    logits = torch.tensor([3.0, 1.0, 2.0, 0.0, -1.0])
    kept = torch.isfinite(filter_logits(logits, GenerationConfig(top_k=2)))
    assert kept.tolist() == [True, False, True, False, False]
    probs = torch.softmax(logits, -1)  # ≈ .665 .090 .245 .033 .012
    nucleus = torch.isfinite(filter_logits(logits, GenerationConfig(top_p=0.8)))
    assert nucleus.tolist() == [True, False, True, False, False]  # .665 < .8 ≤ .665 + .245
    assert torch.isfinite(filter_logits(logits, GenerationConfig(top_p=0.5))).sum() == 1
    assert float(probs[0]) > 0.5
    scaled = filter_logits(logits, GenerationConfig(temperature=2.0))
    torch.testing.assert_close(scaled, logits / 2)


def test_greedy_and_degenerate_sampling_take_the_argmax() -> None:
    logits = torch.tensor([0.1, 5.0, 0.3])
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, GenerationConfig(greedy=True), None) == 1
    assert sample_next(logits, GenerationConfig(temperature=0.0), None) == 1
    assert all(sample_next(logits, GenerationConfig(top_k=1), gen) == 1 for _ in range(20))
    assert all(sample_next(logits, GenerationConfig(top_p=1e-6), gen) == 1 for _ in range(20))


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_k=-1), dict(top_p=0.0),
                                 dict(top_p=1.5), dict(k=0), dict(stop=("",))])
def test_bad_generation_options_are_clear_errors(bad: dict) -> None:
    with pytest.raises(BurrowError):
        GenerationConfig(**bad)


def test_too_long_prompt_and_mismatched_memory_are_clear_errors(gen_memory, retro_dir, tiny_config) -> None:
    from burrow.model import build_model

    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    with pytest.raises(BurrowError, match="shorten the prompt"):
        gen.stream("word " * 600)
    cfg = dataclasses.replace(tiny_config(gen_memory.tokenizer.vocab_size, retro=True), chunk_size=4, retrieved_len=8)
    wrong = build_model(cfg)
    with pytest.raises(BurrowError, match="chunk size"):
        Generator(wrong, gen_memory, device="cpu")
