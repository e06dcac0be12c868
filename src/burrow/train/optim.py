"""AdamW with the papers' weight-decay groups, and the learning-rate schedule (warm-up, cosine to 0.1x).

The schedule is a pure function of the step, so a resumed run needs nothing but the step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from burrow.train.config import TrainConfig

# Parameters of these module types are never decayed: shrinking a norm's gain or an embedding row
# towards zero is not a regulariser of the function, only of its parametrisation.
_NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.LayerNorm)


@dataclass(frozen=True)
class ParamGroups:
    """Parameter names split by whether AdamW decays them, in ``named_parameters()`` order."""

    decay: list[str]
    no_decay: list[str]


def split_decay(model: nn.Module) -> ParamGroups:
    """Decay matrices of linear layers; not norms (any module named ``*Norm``), biases or embeddings.

    The order follows ``model.named_parameters()`` (never a set), so optimizer state is laid out the
    same way in every run and a checkpoint's state loads into a fresh optimizer.
    """
    owner: dict[str, nn.Module] = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = module
    decay: list[str] = []
    no_decay: list[str] = []
    for name, p in model.named_parameters():  # shared (tied) weights appear once, under their first name
        module = owner[name]
        exempt = (
            isinstance(module, _NO_DECAY_MODULES)
            or type(module).__name__.endswith("Norm")
            or name.endswith("bias")
            or p.dim() < 2
        )
        (no_decay if exempt else decay).append(name)
    return ParamGroups(decay, no_decay)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over two groups: decayed (``config.weight_decay``) and not decayed (0).

    Frozen parameters (``requires_grad`` false, e.g. a RETRO-fitted base) are left out entirely, so
    neither the update nor the decoupled weight decay can touch them.
    """
    groups = split_decay(model)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return fused_adamw(
        [
            {"params": [params[n] for n in groups.decay if n in params], "weight_decay": config.weight_decay},
            {"params": [params[n] for n in groups.no_decay if n in params], "weight_decay": 0.0},
        ],
        lr=lr_at(0, config),
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )


def fused_adamw(params: Any, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one kernel for every parameter's update, on CPU and CUDA), else the
    multi-tensor (foreach) one. Same update rule as the per-parameter loop; the optimizer state (and so
    a checkpoint's ``state.pt``) has the same layout whichever kernel made it."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, foreach=True, **kwargs)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer update ``step`` (0-based).

    Linear warm-up to the peak over ``warmup`` updates (update w-1 uses the peak), then a half cosine
    from the peak to ``min_lr_ratio`` x peak, reached at the last update; constant after that.
    """
    return schedule(step, config.lr, int(config.warmup or 0), config.steps, config.min_lr_ratio)


def schedule(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """The schedule of :func:`lr_at` with explicit arguments."""
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * min_ratio
    decay_steps = max(1, total - 1 - warmup)
    t = min(1.0, (step - warmup) / decay_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (weight decay is scaled by it inside AdamW)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
