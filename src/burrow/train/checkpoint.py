"""Atomic checkpoints of a run: the model (safetensors, loadable alone) plus the training state.

Layout of a run directory::

    config.json                 train config + model config + fingerprint of the data it was made from
    metrics.jsonl               one line per step: step, loss, lr, tokens/s (+ val_loss on eval steps)
    checkpoints/step_000100/    model.safetensors + config.json (save_model) + state.pt
    final/                      the trained model (save_model); ``load_model(RUN / "final")``
    train.manifest.json         written last: the run finished

A checkpoint is written into a hidden temporary directory and moved into place with ``os.replace``,
so a killed run never leaves a checkpoint that looks complete. ``state.pt`` holds everything a
resumed run needs to continue exactly as the uninterrupted one would: the optimizer, the step, the
RNG states (the data order is a function of the seed and the step; the LR of the step).
"""

from __future__ import annotations

import errno
import logging
import random
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from burrow.artefacts import atomic_dir
from burrow.errors import BurrowError, first_line
from burrow.model import Transformer, load_model, save_model
from burrow.model.io import STATE_FILE, RunPaths, list_checkpoints

log = logging.getLogger(__name__)

# The run directory's layout lives in model I/O (loading a run needs it); re-exported here.
__all__ = ["DCP_DIR", "STATE_FILE", "RunPaths", "SaveFn", "list_checkpoints", "load_checkpoint", "load_sharded",
           "load_state", "prune_checkpoints", "rng_state", "save_checkpoint", "set_rng_state", "write_model_atomically"]

DCP_DIR = "dcp"  # the sharded (resharding) part of a checkpoint written under torchrun (train/distributed.py)



# Writes a loadable model directory (default ``save_model``; RETRO-fitting saves only the new weights).
SaveFn = Callable[[Any, Path], object]


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout uses torch's)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    # numpy's state as plain lists: a weights-only torch.load reads no numpy arrays.
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [name, keys.tolist(), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        # the GPUs this machine has: a checkpoint of one with more (an 8-GPU node resumed on 4) failed with
        # IndexError in set_rng_state_all
        for i, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)


def save_checkpoint(paths: RunPaths, step: int, model: Transformer, optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any], keep: int, save: SaveFn = save_model) -> Path:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep`` checkpoints."""
    dest = paths.checkpoint(step)
    with atomic_dir(dest) as tmp:  # a re-taken checkpoint of the same step replaces the old one
        save(model, tmp)
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(), **extra}
        try:
            torch.save(state, tmp / STATE_FILE)
        except RuntimeError as e:  # torch reports a full disk only as a failed write ("unexpected pos")
            if shutil.disk_usage(tmp).free < 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp / STATE_FILE)) from e
            raise
    prune_checkpoints(paths, keep)
    return dest


def prune_checkpoints(paths: RunPaths, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and leftovers of interrupted writes."""
    for _, p in list_checkpoints(paths)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    for p in paths.checkpoints.glob(".step_*"):
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path, device: torch.device) -> tuple[Transformer, dict[str, Any]]:
    """The model and the training state (step, RNG; the optimizer state unless written under torchrun, where
    :func:`load_sharded` reads it) of checkpoint ``path``."""
    return load_model(path, device=device), load_state(path)


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the sharded model and optimizer state of torchrun checkpoint ``path`` (``dcp/``) into ``model`` and
    ``optimizer``, resharded to this process's layout: any number of processes, DDP, FSDP or one plain process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": msd, "optim": osd}
    try:
        with warnings.catch_warnings():  # in one process: "torch.distributed is disabled ... a single process"
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path / DCP_DIR))
    except Exception as e:  # a damaged or foreign checkpoint; atomic writes make this rare
        raise BurrowError(f"{path / DCP_DIR} cannot be read ({first_line(e)}); delete that checkpoint to resume "
                          "from an earlier one") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def load_state(path: Path) -> dict[str, Any]:
    """The training state (optimizer state, step, RNG) of checkpoint ``path``, without its model."""
    try:
        # weights_only: a checkpoint holds only tensors and plain containers, never code to run.
        # On the CPU: RNG states must stay CPU tensors; optimizer.load_state_dict moves its state
        # onto each parameter's device.
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file; atomic writes make this rare
        raise BurrowError(f"{path / STATE_FILE} cannot be read ({e}); delete that checkpoint to resume "
                          "from an earlier one") from None
    return state


def write_model_atomically(model: Transformer, dest: Path, save: SaveFn = save_model) -> Path:
    """``save`` (default ``save_model``) into a temporary directory, then move it onto ``dest``."""
    with atomic_dir(dest) as tmp:
        save(model, tmp)
    log.info("saved the model to %s", dest)  # its place, not the temporary folder it was written in
    return dest
