"""FLOPs of a piece of work, counted by torch's FlopCounterMode with the operations it misses added.

torch 2.13's counter has no formula for the CPU's fused attention
(``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward: counted 0) nor for an in-place
``addmm_`` (the fused loss accumulates the output layer's weight gradient with it: counted 0), and on CUDA
it counts the fused attention's backward with its recomputation of the scores. Here every fused attention
kernel, forward and backward, on every device, is counted the same way: the full (not causal-halved)
square, forward 2·b·h·s_q·s_k·(d_qk + d_v), backward twice that (four matmuls: dQ, dK, dV and dP); an
``addmm_`` as an ``addmm``. Callers that count causal attention at half subtract that half themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

#: Fused attention kernels behind ``scaled_dot_product_attention``; each takes (query, key, value, ...) of
#: shapes (b, h, s, d) (the backward ops: (grad_out, query, key, value, ...)).
ATTENTION_FORWARD = tuple(getattr(aten, n) for n in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable") if hasattr(aten, n))
ATTENTION_BACKWARD = tuple(getattr(aten, n + "_backward") for n in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable") if hasattr(aten, n + "_backward"))


def attention_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """Forward FLOPs of softmax(Q Kᵀ) V over the full square: Q Kᵀ and P V."""
    b, h, s_q, d_qk = query
    s_k, d_v = key[-2], value[-1]
    return 2 * b * h * s_q * s_k * (d_qk + d_v)


def _forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return attention_flops(query, key, value)


def _backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
              **kwargs: Any) -> int:
    return 2 * attention_flops(query, key, value)


def _addmm_(bias: Any, a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * a[0] * a[1] * b[1]


MAPPING: dict[Any, Any] = {**{op: _forward for op in ATTENTION_FORWARD},
                           **{op: _backward for op in ATTENTION_BACKWARD}, aten.addmm_: _addmm_}


def counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts fused attention and ``addmm_`` (see the module's docstring)."""
    return FlopCounterMode(display=False, custom_mapping=MAPPING)
