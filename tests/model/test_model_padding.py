"""Padding inside neighbours is never read: what sits at masked or pad-id positions cannot change the logits,
a neighbour (or a chunk's every neighbour) that is all padding gives no NaN, and a fresh zero-init RETRO
still equals its baseline. Also through the KV cache and RETRO-fit's Hugging Face wrapper's shared code."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from burrow.errors import BurrowError
from burrow.model import ModelConfig, build_model

M, R, K, V = 4, 8, 2, 97  # chunk length, tokens per neighbour, neighbours, vocabulary
PAD = 3


def _cfg(**kw: object) -> ModelConfig:
    base = dict(vocab_size=V, d_model=64, n_layers=4, n_heads=4, head_dim=16, max_seq_len=64, retro=True,
                cca_layers=(2, 4), chunk_size=M, retrieved_len=R, enc_d_model=32, enc_n_heads=2, enc_head_dim=16,
                zero_init_cca_out=False, pad_id=PAD)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def _model(cfg: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _inputs(n: int = 18, b: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, neighbours free of the pad id, and a per-token pad pattern (b, l, k, r) like the memory's:
    a short last chunk (pads at its end) and a continuation past the document's end (all pads)."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (b, n), generator=g)
    nb = torch.randint(PAD + 1, V, (b, -(-n // M), K, R), generator=g)
    pad = torch.zeros(nb.shape, dtype=torch.bool)
    pad[:, 0, 1, M + 1:] = True  # continuation cut short by the document's end
    pad[:, 1, 0, 2:M] = True  # a short last chunk: 2 real tokens ...
    pad[:, 1, 0, M:] = True  # ... and no continuation
    pad[0, 2, :, 1:] = True  # both neighbours of chunk 2 hold a single real token (row 0)
    return tokens, nb, pad


def _fill(nb: torch.Tensor, where: torch.Tensor, seed: int) -> torch.Tensor:
    """``nb`` with random ids at ``where``."""
    other = torch.randint(0, V, nb.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(where, other, nb)


def test_content_at_masked_positions_never_changes_the_logits() -> None:
    model = _model(_cfg(pad_id=None))
    tokens, nb, pad = _inputs()
    with torch.no_grad():
        ref = model(tokens, neighbours=nb, neighbour_mask=~pad)
        for seed in (2, 3):
            out = model(tokens, neighbours=_fill(nb, pad, seed), neighbour_mask=~pad)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        # The same change with nothing masked does reach the logits: the test can fail.
        unmasked = model(tokens, neighbours=_fill(nb, pad, 2)) - model(tokens, neighbours=nb)
        assert unmasked.abs().max() > 1e-3


def test_pad_id_positions_are_masked_like_an_explicit_mask() -> None:
    model = _model(_cfg())
    tokens, nb, pad = _inputs()
    padded = nb.masked_fill(pad, PAD)
    with torch.no_grad():
        by_pad_id = model(tokens, neighbours=padded)
        explicit = model(tokens, neighbours=_fill(nb, pad, 4), neighbour_mask=~pad)
        torch.testing.assert_close(by_pad_id, explicit, rtol=0, atol=1e-6)
        # A per-neighbour mask composes with the pad mask: masking neighbour 1 everywhere = leaving it out.
        keep = torch.ones(nb.shape[:3], dtype=torch.bool)
        keep[:, :, 1] = False
        torch.testing.assert_close(model(tokens, neighbours=padded, neighbour_mask=keep),
                                   model(tokens, neighbours=padded[:, :, :1]), rtol=1e-5, atol=1e-5)
        # Without pad_id the same pad tokens are read as text.
        assert (_model(_cfg(pad_id=None))(tokens, neighbours=padded) - by_pad_id).abs().max() > 1e-3


def test_all_padding_neighbours_give_no_nan_and_no_update() -> None:
    model = _model(_cfg())
    tokens, nb, _ = _inputs()
    with torch.no_grad():
        off = model(tokens)
        one_empty = nb.clone()
        one_empty[:, 1, 0] = PAD  # one neighbour all padding, flagged real by the caller's mask
        out = model(tokens, neighbours=one_empty, neighbour_mask=torch.ones(nb.shape[:3], dtype=torch.bool))
        assert torch.isfinite(out).all()
        empty = torch.full_like(nb, PAD)  # every neighbour of every chunk: CCA adds nothing
        torch.testing.assert_close(model(tokens, neighbours=empty), off, rtol=0, atol=0)
        chunk2 = nb.clone()
        chunk2[:, 2] = PAD  # only chunk 2's neighbours: the same as having none for chunk 2
        missing = torch.ones(nb.shape[:3], dtype=torch.bool)
        missing[:, 2] = False
        out = model(tokens, neighbours=chunk2)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, model(tokens, neighbours=nb, neighbour_mask=missing), rtol=0, atol=1e-6)


def test_no_attention_row_is_left_without_a_key() -> None:
    # CPU kernels return zeros for a row with no key, others NaN: the masks never leave such a row.
    from burrow.model.cca import ChunkedCrossAttention
    from burrow.model.encoder import self_attention_mask

    real = torch.zeros(2, 3, K, R, dtype=torch.bool)
    real[0, 1, 0, :2] = True
    keys = self_attention_mask(real)
    assert keys is not None and keys.shape == (2 * 3 * K, 1, 1, R) and keys.any(-1).all()
    assert torch.equal(keys[2].flatten(), real[0, 1, 0])  # a neighbour with real tokens keeps its mask
    cca_keys, valid = ChunkedCrossAttention._mask(real, 2 * 3)
    assert cca_keys is not None and valid is not None and cca_keys.any(-1).all()
    assert valid.tolist() == [False, True, False, False, False, False]


def test_gradients_stay_finite_with_all_padding_neighbours() -> None:
    model = _model(_cfg()).train()
    tokens, nb, _ = _inputs()
    nb[:, 1] = PAD
    model(tokens, neighbours=nb).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("steps", [[18], [5, 1, 1, 3, 8]])
def test_cached_steps_mask_padding_as_one_call(steps: list[int]) -> None:
    model = _model(_cfg())
    tokens, nb, pad = _inputs()
    padded = nb.masked_fill(pad, PAD)
    with torch.no_grad():
        full = model(tokens, neighbours=padded)
        cache = model.new_cache(2, 32)
        parts, at = [], 0
        for n in steps:
            parts.append(model(tokens[:, at:at + n], neighbours=padded, cache=cache))
            at += n
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)


def test_fresh_zero_init_retro_with_padding_equals_its_baseline() -> None:
    cfg = _cfg(zero_init_cca_out=True)
    base_cfg = dataclasses.replace(cfg, retro=False, cca_layers=(), pad_id=None)
    torch.manual_seed(0)
    base = build_model(base_cfg).eval()
    retro = build_model(cfg).eval()
    retro.load_state_dict(base.state_dict(), strict=False)
    tokens, nb, pad = _inputs()
    with torch.no_grad():
        assert torch.equal(retro(tokens, neighbours=nb.masked_fill(pad, PAD)), base(tokens))


def test_pad_id_is_checked_and_round_trips() -> None:
    with pytest.raises(BurrowError, match="pad_id"):
        _cfg(pad_id=V)
    assert ModelConfig.from_dict(_cfg().to_dict()).pad_id == PAD
    old = _cfg().to_dict()
    del old["pad_id"]  # a config.json written before padding was masked
    assert ModelConfig.from_dict(old).pad_id is None


def test_a_mask_of_the_wrong_shape_is_a_clear_error() -> None:
    model = _model(_cfg())
    tokens, nb, _ = _inputs()
    with pytest.raises(BurrowError, match="per token"):
        model(tokens, neighbours=nb, neighbour_mask=torch.ones(nb.shape[:2], dtype=torch.bool))
