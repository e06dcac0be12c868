"""Cached incremental logits equal uncached full-sequence logits (paper point d)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from burrow.errors import BurrowError
from burrow.model import ModelConfig, build_model

M, R = 4, 8


def _cfg(retro: bool) -> ModelConfig:
    return ModelConfig(vocab_size=61, d_model=64, n_layers=4, n_heads=4, head_dim=16, max_seq_len=32,
                       retro=retro, cca_layers=(2, 3) if retro else (), chunk_size=M, retrieved_len=R,
                       enc_d_model=32, enc_n_heads=2, enc_head_dim=16, zero_init_cca_out=False)


def _run_cached(model: torch.nn.Module, tokens: torch.Tensor, nb: torch.Tensor | None,
                steps: list[int]) -> torch.Tensor:
    cache = model.new_cache(tokens.shape[0], max_len=32)
    outs, pos = [], 0
    for size in steps:
        outs.append(model(tokens[:, pos:pos + size], neighbours=nb, cache=cache))
        pos += size
    assert cache.length == tokens.shape[1]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("retro", [False, True])
@pytest.mark.parametrize("steps", [[1] * 19, [5, 1, 1, 6, 1, 1, 1, 3], [3, 8, 8], [19]])
def test_cached_logits_equal_full_sequence(retro: bool, steps: list[int]) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(retro)).eval()
    tokens = torch.randint(0, 61, (2, 19))
    nb = torch.randint(0, 61, (2, 5, 2, R)) if retro else None
    with torch.no_grad():
        full = model(tokens, neighbours=nb)
        cached = _run_cached(model, tokens, nb, steps)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


def test_retro_off_cached_equals_uncached() -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(True)).eval()
    tokens = torch.randint(0, 61, (1, 11))
    with torch.no_grad():
        torch.testing.assert_close(_run_cached(model, tokens, None, [4, 1, 6]), model(tokens),
                                   rtol=1e-5, atol=1e-5)


def test_cache_overflow_and_missing_neighbours_are_clear_errors() -> None:
    model = build_model(_cfg(True)).eval()
    cache = model.new_cache(1, max_len=4)
    with pytest.raises(BurrowError, match="cache full"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(BurrowError, match="neighbours cover"):
        model(torch.zeros(1, 12, dtype=torch.long), neighbours=torch.zeros(1, 2, 2, R, dtype=torch.long))


@pytest.mark.parametrize("steps", [[1] * 19, [5, 1, 1, 6, 1, 1, 1, 3]])
def test_cached_logits_equal_full_sequence_with_masks_and_padding(steps: list[int]) -> None:
    """Decoding keeps each chunk's CCA masks once (and drops them where every key is real): the same
    logits as the uncached forward with missing neighbours, padding inside neighbours, and neither."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(_cfg(True), pad_id=0)).eval()
    tokens = torch.randint(1, 61, (2, 19))
    nb = torch.randint(1, 61, (2, 5, 2, R))
    nb[0, 1, 1, R // 2:] = 0  # padding inside one neighbour of chunk 1, row 0
    nb[:, 3, :, 3:] = 0  # chunk 3: every neighbour mostly padding
    mask = torch.ones(2, 5, 2, dtype=torch.bool)
    mask[1, 2] = False  # chunk 2 of row 1: no neighbour at all (no update there)
    mask[0, 0, 0] = False  # chunk 0 of row 0: one of two missing
    with torch.no_grad():
        full = model(tokens, neighbours=nb, neighbour_mask=mask)
        cache = model.new_cache(2, max_len=32)
        outs, pos = [], 0
        for size in steps:
            outs.append(model(tokens[:, pos:pos + size], neighbours=nb, neighbour_mask=mask, cache=cache))
            pos += size
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)
