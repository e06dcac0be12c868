"""AdamW parameter groups (no decay on norms, biases, embeddings) and the LR schedule's shape."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from burrow.model import build_model
from burrow.presets import get_preset
from burrow.train import TrainConfig
from burrow.train.optim import build_optimizer, lr_at, schedule, split_decay


def _config(**kw: object) -> TrainConfig:
    return TrainConfig(model="tiny", out=Path("unused"), tokens=Path("unused"), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name,tie", [("tiny", False), ("tiny", True), ("retro-tiny", False)])
def test_weight_decay_skips_norms_biases_and_embeddings(name: str, tie: bool) -> None:
    model = build_model(get_preset(name, vocab_size=64, d_model=32, n_heads=2, head_dim=16, enc_d_model=32,
                                   enc_n_heads=2, enc_head_dim=16, tie_embeddings=tie))
    groups = split_decay(model)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(groups.decay + groups.no_decay) == sorted(names)  # every parameter exactly once
    assert groups.decay == [n for n in names if n in groups.decay]  # named_parameters order, not a set's
    assert "embed.weight" in groups.no_decay
    assert all("norm" not in n for n in groups.decay)
    assert any("norm" in n for n in groups.no_decay)
    assert ("head.weight" in groups.decay) == (not tie)  # a tied head is the embedding
    assert any(n.endswith("attn.qkv.weight") for n in groups.decay)
    opt = build_optimizer(model, _config(steps=10))
    wd = [g["weight_decay"] for g in opt.param_groups]
    assert wd == [0.1, 0.0]
    params = dict(model.named_parameters())
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(params[n]) for n in groups.decay]


def test_biases_and_layer_norms_are_exempt() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
    groups = split_decay(model)
    assert groups.decay == ["0.weight", "2.weight"]
    assert groups.no_decay == ["0.bias", "1.weight", "1.bias"]


def test_lr_schedule_warms_up_then_cosine_to_a_tenth() -> None:
    cfg = _config(steps=110, warmup=10, lr=1e-3)
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[4] == pytest.approx(5e-4)  # linear from ~0
    assert max(lrs) == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-3) == lrs[10]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # cosine never rises
    assert lrs[-1] == pytest.approx(1e-4)  # 0.1 x peak at the last step
    mid = 10 + (110 - 1 - 10) // 2
    t = (mid - 10) / (110 - 1 - 10)
    assert lrs[mid] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * t)))
    assert schedule(500, 1.0, 10, 110, 0.1) == pytest.approx(0.1)  # flat past the end


def test_optimizer_state_order_is_stable_across_builds() -> None:
    cfg = get_preset("retro-tiny", vocab_size=64, d_model=32, n_heads=2, head_dim=16, enc_d_model=32,
                     enc_n_heads=2, enc_head_dim=16)
    a, b = build_model(cfg), build_model(cfg)
    opt_a, opt_b = build_optimizer(a, _config(steps=10)), build_optimizer(b, _config(steps=10))
    shapes = [[tuple(p.shape) for p in g["params"]] for g in opt_a.param_groups]
    assert shapes == [[tuple(p.shape) for p in g["params"]] for g in opt_b.param_groups]
    assert isinstance(opt_a, torch.optim.AdamW)


def test_fused_adamw_matches_the_reference_update() -> None:
    """The fused kernel the loop uses makes the same updates as AdamW's per-parameter loop."""
    from burrow.train.optim import fused_adamw

    torch.manual_seed(0)
    a = nn.Linear(8, 4)
    b = nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fast = fused_adamw(a.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    assert fast.defaults.get("fused") or fast.defaults.get("foreach")
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, opt in ((a, fast), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert fast.state_dict()["state"].keys() == ref.state_dict()["state"].keys()
