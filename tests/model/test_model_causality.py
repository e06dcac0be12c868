"""RETRO's causality by perturbation (paper points a, b, c, g) on tiny CPU configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from burrow.model import ModelConfig, build_model

M = 4  # chunk length in these tests
R = 8  # tokens per neighbour


def _cfg(retro: bool = True, **kw: object) -> ModelConfig:
    base = dict(vocab_size=97, d_model=64, n_layers=4, n_heads=4, head_dim=16, max_seq_len=64,
                retro=retro, cca_layers=(2, 4) if retro else (), chunk_size=M, retrieved_len=R,
                enc_d_model=32, enc_n_heads=2, enc_head_dim=16, zero_init_cca_out=False)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def _model(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _inputs(n: int, k: int = 2, b: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 97, (b, n), generator=g)
    neighbours = torch.randint(0, 97, (b, -(-n // M), k, R), generator=g)
    return tokens, neighbours


@pytest.mark.parametrize("retro", [False, True])
def test_changing_token_t_changes_no_earlier_logit(retro: bool) -> None:
    model = _model(_cfg(retro))
    tokens, nb = _inputs(18)
    with torch.no_grad():
        ref = model(tokens, neighbours=nb if retro else None)
        for t in (0, 3, 4, 9, 17):
            changed = tokens.clone()
            changed[:, t] = (changed[:, t] + 1) % 97
            out = model(changed, neighbours=nb if retro else None)
            torch.testing.assert_close(out[:, :t], ref[:, :t], rtol=0, atol=1e-6)
            assert (out[:, t] - ref[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize("n", [16, 18, 19])  # whole chunks and a partial last chunk
def test_neighbours_of_chunk_u_only_reach_its_last_token_onward(n: int) -> None:
    model = _model(_cfg())
    tokens, nb = _inputs(n)
    with torch.no_grad():
        ref = model(tokens, neighbours=nb)
        for u in range(n // M):
            changed = nb.clone()
            changed[:, u] = (changed[:, u] + 1) % 97
            out = model(tokens, neighbours=changed)
            first = (u + 1) * M - 1  # last token of chunk u
            torch.testing.assert_close(out[:, :first], ref[:, :first], rtol=0, atol=1e-6)
            diff = (out[:, first:] - ref[:, first:]).abs().amax(dim=(0, 2))  # per position
            assert bool((diff > 1e-5).all()), f"chunk {u}: some position at/after {first} is unaffected"


def test_first_m_minus_1_tokens_pass_through_cca_unchanged() -> None:
    model = _model(_cfg())
    tokens, nb = _inputs(12)
    with torch.no_grad():
        on, off = model(tokens, neighbours=nb), model(tokens)
    torch.testing.assert_close(on[:, : M - 1], off[:, : M - 1], rtol=0, atol=0)
    assert (on[:, M - 1] - off[:, M - 1]).abs().max() > 1e-4


def test_zeroed_cca_output_gives_the_baselines_logits_exactly() -> None:
    base = _model(_cfg(retro=False), seed=3)
    retro = _model(_cfg(zero_init_cca_out=True), seed=4)
    missing, unexpected = retro.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    assert all(".cca" in key or key.startswith("encoder.") for key in missing)
    tokens, nb = _inputs(18)
    with torch.no_grad():
        assert torch.equal(retro(tokens, neighbours=nb), base(tokens))
        assert torch.equal(retro(tokens), base(tokens))


def test_neighbour_count_may_change_and_short_neighbour_tensors_work() -> None:
    model = _model(_cfg())
    tokens, nb = _inputs(18, k=3)
    with torch.no_grad():
        full = model(tokens, neighbours=nb)  # l = ceil(n / m) = 5
        exact = model(tokens, neighbours=nb[:, : 18 // M])  # l = n // m = 4
        torch.testing.assert_close(full, exact, rtol=0, atol=0)
        assert model(tokens, neighbours=nb[:, :, :1]).shape == (2, 18, 97)


def test_masked_neighbour_equals_leaving_it_out() -> None:
    model = _model(_cfg())
    tokens, nb = _inputs(16, k=2)
    mask = torch.ones(nb.shape[:3], dtype=torch.bool)
    mask[:, :, 1] = False
    with torch.no_grad():
        masked = model(tokens, neighbours=nb, neighbour_mask=mask)
        only_first = model(tokens, neighbours=nb[:, :, :1])
        torch.testing.assert_close(masked, only_first, rtol=1e-5, atol=1e-5)
        mask[:] = False  # no neighbour at all: CCA adds nothing, finite logits
        none = model(tokens, neighbours=nb, neighbour_mask=mask)
    assert torch.isfinite(none).all()


def test_gradients_reach_encoder_and_cca() -> None:
    cfg = dataclasses.replace(_cfg(), dropout=0.1)
    model = build_model(cfg).train()
    tokens, nb = _inputs(12)
    model(tokens, neighbours=nb).sum().backward()
    assert model.encoder is not None
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_dropout_acts_in_training_only() -> None:
    """Dropout is skipped where it is the identity (eval, p = 0), never where it is not."""
    cfg = dataclasses.replace(_cfg(), dropout=0.3)
    model = build_model(cfg)
    tokens, nb = _inputs(12)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(tokens, neighbours=nb), model(tokens, neighbours=nb))
        model.eval()
        torch.testing.assert_close(model(tokens, neighbours=nb), model(tokens, neighbours=nb), rtol=0, atol=0)


def test_rotary_swap_is_the_half_split_rotation() -> None:
    """apply_rope is [x1 cos - x2 sin, x2 cos + x1 sin] on the two halves of the head width, also on a
    non-contiguous view (the fused QKV's slice) and in bf16."""
    from burrow.model.layers import apply_rope, rope_tables

    qkv = torch.randn(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)  # (3, b, h, n, e)
    x = qkv[:2]
    rope = rope_tables(torch.arange(5), 8, 10000.0)
    cos, sin = rope[0][:, :4], -rope[1][:, :4]  # (n, e/2): the plain cos and sin
    x1, x2 = x[..., :4], x[..., 4:]
    want = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    torch.testing.assert_close(apply_rope(x, rope), want)
    xb = x.to(torch.bfloat16)
    assert apply_rope(xb, rope).dtype == torch.bfloat16
