"""Where and in what precision to compute: CUDA when present, else CPU with bf16 where the CPU has it.

Autocast and device choice live here only, so training, evaluation, encoding and generation agree.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

#: Device when nobody says: CUDA when present, else the CPU (every config and command defaults to it).
DEFAULT_DEVICE = "auto"
#: Autocast when nobody says: bf16 on CUDA or a CPU with fast bf16, else none.
DEFAULT_PRECISION = "auto"


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given (``cpu``, ``cuda``, ``cuda:1``), else CUDA when available, else CPU."""
    if requested and requested != "auto":
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``; a no-op when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
