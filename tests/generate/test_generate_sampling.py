"""Sampling: seeded runs repeat, filters keep what they should, bad options are clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from burrow.errors import BurrowError
from burrow.generate import GenerationConfig, Generator
from burrow.generate.sampling import _least_kept_numpy, _least_kept_torch, filter_logits, sample_next
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
    assert GenerationConfig().top_p == 0.9  # the default nucleus (the page's): plain sampling is incoherent
    logits = torch.tensor([3.0, 1.0, 2.0, 0.0, -1.0])
    kept = torch.isfinite(filter_logits(logits, GenerationConfig(top_k=2, top_p=1.0)))
    assert kept.tolist() == [True, False, True, False, False]
    probs = torch.softmax(logits, -1)  # ≈ .665 .090 .245 .033 .012
    nucleus = torch.isfinite(filter_logits(logits, GenerationConfig(top_p=0.8)))
    assert nucleus.tolist() == [True, False, True, False, False]  # .665 < .8 ≤ .665 + .245
    assert torch.isfinite(filter_logits(logits, GenerationConfig(top_p=0.5))).sum() == 1
    assert float(probs[0]) > 0.5
    scaled = filter_logits(logits, GenerationConfig(temperature=2.0, top_p=1.0))
    torch.testing.assert_close(scaled, logits / 2)


def _nucleus_by_full_sort(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: sort the whole vocabulary, drop a token once the ones before it reach top_p.
    Also returns each token's mass before it (v,), to tell float rounding from a real difference."""
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs
    kept = logits.masked_fill(torch.zeros_like(before, dtype=torch.bool).scatter(0, order, before >= top_p),
                              float("-inf"))
    return kept, torch.zeros_like(before).scatter(0, order, before)


def _same_nucleus(got: torch.Tensor, logits: torch.Tensor, top_p: float) -> bool:
    """``got`` keeps what a full sort keeps, except where the mass before a token is within float
    rounding of top_p (summing thousands of float32 probabilities; either choice is a valid nucleus)
    and for tokens exactly as likely as the least likely one kept (a sort orders ties arbitrarily;
    burrow keeps them all)."""
    want, before = _nucleus_by_full_sort(logits, top_p)
    differ = torch.isfinite(got) != torch.isfinite(want)
    probs = torch.softmax(logits, dim=-1)
    tied = probs == probs[torch.isfinite(want)].min()
    return bool((((before - top_p).abs() < 1e-5) | tied)[differ].all())


@pytest.mark.parametrize("scale", [0.01, 1.0, 3.0, 8.0, 30.0])
def test_nucleus_from_candidates_equals_a_full_sort(scale: float) -> None:
    # Peaked and flat distributions: the flat ones need more than the first 64 (and 512) candidates.
    gen = torch.Generator().manual_seed(int(scale * 100))
    for trial in range(40):
        v = [5, 64, 65, 700, 8192][trial % 5]
        logits = torch.randn(v, generator=gen) * scale
        if trial % 3 == 0:  # banned or top-k-filtered tokens
            logits[torch.randperm(v, generator=gen)[: v // 3]] = float("-inf")
        for top_p in (0.05, 0.5, 0.9, 0.99, 0.999999):
            cfg = GenerationConfig(top_p=top_p)
            got = filter_logits(logits, cfg)
            assert _same_nucleus(got, logits, top_p), (scale, v, top_p)
            probs = torch.softmax(logits, dim=-1)  # the GPU's path finds the same least kept token
            assert float(_least_kept_torch(probs, top_p)) == float(_least_kept_numpy(probs.numpy(), top_p))
            assert torch.equal(got[torch.isfinite(got)], logits[torch.isfinite(got)])
            assert torch.isfinite(got).any()
    # Combined with top-k and temperature, as sample_next applies them.
    logits = torch.randn(8192, generator=gen) * scale
    cfg = GenerationConfig(temperature=0.7, top_k=300, top_p=0.9)
    scaled = logits / 0.7
    scaled = scaled.masked_fill(scaled < torch.topk(scaled, 300).values[-1], float("-inf"))
    assert _same_nucleus(filter_logits(logits, cfg), scaled, 0.9)


def test_greedy_and_degenerate_sampling_take_the_argmax() -> None:
    logits = torch.tensor([0.1, 5.0, 0.3])
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, GenerationConfig(greedy=True), None) == 1
    assert sample_next(logits, GenerationConfig(temperature=0.0), None) == 1
    assert all(sample_next(logits, GenerationConfig(top_k=1), gen) == 1 for _ in range(20))
    assert all(sample_next(logits, GenerationConfig(top_p=1e-6), gen) == 1 for _ in range(20))
    assert all(sample_next(logits, GenerationConfig(top_p=1e-17), gen) == 1 for _ in range(5))  # below float64's step


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-45, 1e-38, 1e38, 1e308])
def test_extreme_temperatures_sample_instead_of_failing(temperature: float) -> None:
    """float32 over- or underflows at these (x / 1e-300 is inf, -inf / 1e308 NaN): multinomial refused the NaN
    probabilities with a traceback (an HTTP 500 in `serve`). Tiny temperatures are the argmax, huge ones
    every token that is not banned."""
    logits = torch.tensor([0.1, 5.0, -2.0, 4.0, float("-inf")])
    gen = torch.Generator().manual_seed(0)
    tokens = {sample_next(logits, GenerationConfig(temperature=temperature, top_p=p), gen)
              for p in (1.0, 0.9) for _ in range(40)}
    assert tokens == {1} if temperature < 1 else (tokens <= {0, 1, 2, 3} and len(tokens) > 1), tokens


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1), dict(temperature=float("inf")),
                                 dict(temperature=float("nan")), dict(top_k=-1), dict(top_p=0.0),
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


def test_unk_and_bos_are_never_sampled(gen_memory, retro_dir) -> None:
    """SentencePiece's unk decodes to " ⁇ " and its bos to nothing; no text is encoded to either, so the sampler
    never draws them (with top-p 1 at a high temperature it did)."""
    from burrow.generate import Generator
    from burrow.model import load_model

    tok = gen_memory.tokenizer
    sp = tok._backend
    assert set(tok.unused_ids()) == {sp.unk_id(), sp.bos_id()} and tok.eos_id not in tok.unused_ids()
    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    assert {sp.unk_id(), sp.bos_id(), tok.pad_id} <= set(gen.banned.tolist())
    res = gen.generate("Owls", GenerationConfig(max_new_tokens=60, temperature=50.0, top_p=1.0, seed=1))
    assert not {sp.unk_id(), sp.bos_id(), tok.pad_id} & set(res.tokens) and "⁇" not in res.text


def test_a_chat_seed_near_the_largest_does_not_fail_the_next_replies() -> None:
    """Reply i samples with seed + i: --seed 2^63 - 1 (accepted) failed every reply after the first with
    'seed must be in [0, 2^63)'."""
    from burrow.generate.config import ChatConfig

    config = ChatConfig(seed=2**63 - 1)
    assert [config.generation(turn).seed for turn in range(3)] == [2**63 - 1, 0, 1]
    assert ChatConfig(seed=5).generation(2).seed == 7 and ChatConfig().generation(2).seed is None
