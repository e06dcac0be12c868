"""The FLOP count behind bench/train_step.py's "% of peak": every matmul and attention counted once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))
    try:
        import flops
        import train_step

        yield flops, train_step
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("kind", ["causal", "mask", "plain"])
def test_fused_attention_counts_as_the_math_path(bench, kind: str) -> None:  # type: ignore[no-untyped-def]
    """torch's counter has no formula for the CPU's fused attention (forward and backward counted 0);
    ours counts it as the unfused math path's matmuls (the full square, backward twice the forward)."""
    flops, _ = bench
    q = torch.randn(2, 3, 64, 32, requires_grad=True)
    k = torch.randn(2, 3, 48 if kind != "causal" else 64, 32, requires_grad=True)
    v = torch.randn(2, 3, k.shape[2], 16, requires_grad=True)
    mask = torch.rand(64, k.shape[2]) > 0.3 if kind == "mask" else None

    def run() -> None:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=kind == "causal").sum().backward()

    with flops.counter() as fused:
        run()
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as math:
        run()
    assert fused.get_total_flops() == math.get_total_flops() == 3 * flops.attention_flops(q.shape, k.shape, v.shape)


def test_in_place_addmm_is_counted(bench) -> None:  # type: ignore[no-untyped-def]
    flops, _ = bench
    w, a, b = torch.zeros(8, 4), torch.randn(8, 16), torch.randn(16, 4)
    with flops.counter() as c:
        w.addmm_(a, b)
    assert c.get_total_flops() == 2 * 8 * 16 * 4


def test_train_step_flops_equal_the_analytic_count(bench) -> None:  # type: ignore[no-untyped-def]
    """A baseline step: 3 × (2 · tokens · matmul weights + causal attention at half its square), the
    output layer's three matmuls included (its weight gradient is the fused loss's addmm_)."""
    from burrow.presets import get_preset

    _, train_step = bench
    cfg = get_preset("tiny", vocab_size=512, max_seq_len=128)
    torch.manual_seed(0)
    model = train_step.build_model(cfg).train()
    tokens, nb = train_step.make_batch(cfg, 2, 128, 2, torch.device("cpu"))
    counted = train_step.step_flops(cfg, model, tokens, nb, torch.device("cpu"), None)
    t, n = 2 * 128, 128
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 4 * t * n * cfg.n_heads * cfg.head_dim * cfg.n_layers / 2
    assert counted == 3 * (2 * t * weights + attention)
