"""Save and load models: ``model.safetensors`` + ``config.json`` (+ a manifest), loadable from a path.

A model directory describes itself: ``config.json`` is the :class:`ModelConfig` as JSON, so
:func:`load_model` rebuilds the architecture before reading the weights; ``model.manifest.json``
records the format version, parameter count and a hash of the weights. Writes are atomic.
"""

from __future__ import annotations

import logging
from pathlib import Path

import safetensors.torch
import torch

from burrow.artefacts import atomic_path, file_sha256, read_json, write_json, write_manifest
from burrow.errors import BurrowError
from burrow.model.config import ModelConfig
from burrow.model.transformer import Transformer, build_model

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model(model: Transformer, path: str | Path) -> Path:
    """Write ``model`` into directory ``path`` (created if needed); returns the directory."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        # save_model (not save_file) handles tied embedding/head weights.
        safetensors.torch.save_model(model, str(tmp))
    write_json(directory / CONFIG_FILE, model.config.to_dict())
    write_manifest(directory, "model", config=model.config.to_dict(),
                   parameters=model.num_parameters(non_embedding=False),
                   weights_sha256=file_sha256(directory / WEIGHTS_FILE))
    log.info("saved %s model to %s", model.config.name or "burrow", directory)
    return directory


def damaged(path: Path, why: str) -> BurrowError:
    """The error for a damaged file of a model directory, with the fix that fits where that directory is."""
    d = path.parent
    if d.name == "final" and (d.parent / "checkpoints").is_dir():
        fix = (f"delete {d} and {d.parent / 'train.manifest.json'}, then re-run the same `burrow train` command: it "
               "rewrites final/ from the last checkpoint without training again")
    elif d.parent.name == "checkpoints":
        fix = f"delete the checkpoint {d} and re-run `burrow train`: it resumes from an earlier checkpoint"
    else:
        fix = "restore that file from a copy or save the model again"
    return BurrowError(f"{path} is damaged or truncated ({why}); {fix}")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Rebuild a model saved by :func:`save_model` from its directory (or its weights file)."""
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    weights = directory / WEIGHTS_FILE
    if not weights.exists():
        raise BurrowError(f"{directory} holds no {WEIGHTS_FILE}; is it a burrow model directory?")
    try:
        config = ModelConfig.from_dict(read_json(directory / CONFIG_FILE))
    except BurrowError:
        if not (directory / CONFIG_FILE).exists():
            raise
        raise damaged(directory / CONFIG_FILE, "not valid JSON") from None
    model = build_model(config)
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(weights), strict=False, device=str(device))
    except (safetensors.SafetensorError, OSError) as e:  # truncated or overwritten weights
        raise damaged(weights, str(e)) from None
    if missing or unexpected:
        raise BurrowError(
            f"{weights} does not match its config.json (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); re-save the model"
        )
    return model.to(device)
