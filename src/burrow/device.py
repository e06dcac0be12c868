"""Where and in what precision to compute: CUDA when present, else CPU with bf16 where the CPU has it.

Autocast and device choice live here only, so training, evaluation, encoding and generation agree.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from burrow.errors import BurrowError, first_line

log = logging.getLogger(__name__)

M = TypeVar("M")



def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given (``cpu``, ``cuda``, ``cuda:1``), else CUDA when available, else CPU.

    A device this machine cannot use (a typo, ``cuda`` on a CPU-only torch or machine, a GPU index past
    the last, ``mps`` off Apple) is a :class:`BurrowError` saying so, before anything is loaded onto it.
    """
    if not requested or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise BurrowError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from None
    why = None
    if device.type == "cuda":  # checked without touching a GPU: torchrun's ranks pick theirs after this
        if not torch.cuda.is_available():
            why = "no CUDA GPU is visible" if torch.backends.cuda.is_built() else "this torch is built without CUDA"
        elif device.index is not None and device.index >= torch.cuda.device_count():
            why = f"{torch.cuda.device_count()} GPU(s) visible"
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as e:
            why = first_line(e).split(". ")[0][:100]  # torch's MPS message runs to a page
    if why is not None:
        here = "cuda" if torch.cuda.is_available() else "cpu"
        raise BurrowError(f"device {requested!r} is not usable here ({why}); use --device {here} or auto")
    return device


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 autocast pays."""
    try:
        caps = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        caps = ""
    if "AMX" in caps.upper():
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, requested: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 on CUDA with bf16 support or a bf16 CPU, else none.

    ``requested`` may be ``auto``, ``bf16``, ``fp16`` or ``fp32`` (``fp32`` disables autocast).
    """
    if requested == "fp32":
        return None
    if requested == "bf16":
        return torch.bfloat16
    if requested == "fp16":
        return torch.float16
    if device.type == "cuda":
        # native bf16 only (Ampere and later): V100/T4 emulate it, slowly; fp16 there (training scales its loss)
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``; a no-op when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def autocast_weights(model: M, dtype: torch.dtype | None) -> M:
    """A copy of ``model`` whose ``nn.Linear`` weights and biases are stored in ``dtype``, for
    inference under :func:`autocast` to ``dtype``; ``model`` itself when ``dtype`` is None or no
    linear weight needs casting.

    Autocast casts a linear layer's fp32 weight to ``dtype`` on every call, so one decoding step reads
    every weight in fp32, writes it in ``dtype`` and reads it again; decoding a token is bound by those
    bytes. Cast once, a step reads half the bytes and computes the same values: autocast would round
    each weight the same way, and everything it keeps in fp32 (embeddings, norms, the residual stream)
    stays fp32. ``model`` is left as it was; the copy is a snapshot (later training of ``model`` does
    not reach it). A weight a linear layer shares with another kind of module (an output layer tied
    to the embedding) is cast in the copy's linear layer only, so the embedding still returns fp32.
    """
    if dtype is None:
        return model
    assert isinstance(model, nn.Module)

    def castable(param: torch.Tensor | None) -> bool:
        return param is not None and param.is_floating_point() and param.dtype != dtype

    def cast(param: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(param.detach().to(dtype), requires_grad=False)

    linear = [p for m in model.modules() if isinstance(m, nn.Linear) for p in (m.weight, m.bias) if castable(p)]
    if not linear:
        return model
    shared = {id(p) for m in model.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    # Cast while copying (the memo maps each original weight to its cast copy): no second fp32 copy.
    memo: dict[int, Any] = {id(p): cast(p) for p in linear if id(p) not in shared}
    twin = copy.deepcopy(model, memo)
    for module in twin.modules():  # the tied ones, copied in fp32 with their other module
        if isinstance(module, nn.Linear):
            for name in ("weight", "bias"):
                param = getattr(module, name)
                if castable(param):
                    setattr(module, name, cast(param))
    return twin
