"""``torch.compile`` for training, with its compilation cached on disk so it is paid once per machine.

Inductor caches compiled graphs (FX graph and kernel caches) under ``TORCHINDUCTOR_CACHE_DIR``; burrow
points it at ``~/.cache/burrow/inductor`` (unless the variable is set), so a second run of the same
model shape on the same machine loads the kernels instead of compiling them. The caller reports the
first step's time, which includes the compilation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

CACHE_DIR = Path.home() / ".cache" / "burrow" / "inductor"


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` sharing ``model``'s parameters (save and load ``model`` itself)."""
    cache = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(CACHE_DIR))
    log.info("torch.compile: the first step compiles (cached in %s for the next run)", cache)
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]
    return compiled
