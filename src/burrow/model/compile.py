"""``torch.compile`` for training, with its compilation cached on disk so it is paid once per machine.

Inductor caches compiled graphs (FX graph and kernel caches) under ``TORCHINDUCTOR_CACHE_DIR``; burrow
points it at ``inductor`` in burrow's cache folder (``hfcache.cache_root``: ``~/.cache/burrow`` unless
``$BURROW_CACHE`` says otherwise; a variable already set wins), so a second run of the same model shape on
the same machine loads the kernels instead of compiling them. The caller reports the first step's time,
which includes the compilation.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from burrow.hfcache import cache_root

log = logging.getLogger(__name__)


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` sharing ``model``'s parameters (save and load ``model`` itself)."""
    root = cache_root()
    if root is not None:  # BURROW_CACHE=off: inductor's own default
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "inductor's default folder")
    log.info("torch.compile: the first step compiles (cached in %s for the next run)", cache)
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]
    return compiled
