"""Model I/O, the one place that writes and reads models: model directories, run directories, retrofits.

* **Model directory**: ``model.safetensors`` + ``config.json`` (+ ``model.manifest.json``).
  ``config.json`` is the :class:`ModelConfig` as JSON, so :func:`load_model` rebuilds the
  architecture before reading the weights; the manifest records the format version, parameter
  count and a hash of the weights. Writes are atomic.
* **Retrofit directory**: a model directory of a RETRO-fitted Hugging Face model holds only the new
  weights, the RETRO config and ``retrofit.json`` naming the base (:class:`BaseRef`), never the
  frozen weights (:func:`save_hf_retrofit`, :func:`load_retrofit_dir`).
* **Run directory** (:class:`RunPaths`): ``config.json``, ``metrics.jsonl``,
  ``checkpoints/step_NNNNNN/`` (a model directory + ``state.pt``), ``final/`` (a model directory)
  and ``train.manifest.json`` once finished. :func:`load_run` gives ``final/``, else the newest
  checkpoint.
* **Any of these**: :func:`load_named_model` (what ``burrow eval``, ``generate`` and ``serve`` take).
* **Hugging Face bases**: :func:`resolve_hf_base` (names, directories, the ``smollm2`` package).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from burrow.artefacts import (
    atomic_path,
    file_sha256,
    files_id,
    manifest_path,
    read_json,
    read_manifest,
    require_model_path,
    write_json,
    write_manifest,
)
from burrow.errors import BurrowError, first_line
from burrow.hub import resolve_hf_base
from burrow.model.config import ModelConfig
from burrow.model.hf import HFRetro, load_hf_causal_lm
from burrow.model.protocol import RetrievalLM
from burrow.model.transformer import Transformer, build_model

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RETROFIT_FILE = "retrofit.json"  # in a model directory: the base a HF retrofit's new weights belong to
STATE_FILE = "state.pt"  # in a checkpoint directory: the training state (train.checkpoint writes it)
_STEP_DIR = re.compile(r"^step_(\d+)$")

__all__ = ["CONFIG_FILE", "RETROFIT_FILE", "STATE_FILE", "WEIGHTS_FILE", "BaseRef", "RunPaths", "list_checkpoints",
           "load_model", "load_model_dir", "load_named_model", "load_retrofit_dir", "load_run", "resolve_hf_base",
           "save_hf_retrofit", "save_model", "weights_id"]


def save_model(model: Transformer, path: str | Path) -> Path:
    """Write ``model`` into directory ``path`` (created if needed); returns the directory."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    _forget_previous(directory)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        # save_model (not save_file) handles tied embedding/head weights.
        safetensors.torch.save_model(model, str(tmp))
    write_json(directory / CONFIG_FILE, model.config.to_dict())
    write_manifest(directory, "model", config=model.config.to_dict(),
                   parameters=model.num_parameters(non_embedding=False),
                   weights_sha256=file_sha256(directory / WEIGHTS_FILE))
    log.debug("saved %s model to %s", model.config.name or "burrow", directory)  # often a temporary folder
    return directory


def _forget_previous(directory: Path) -> None:
    """Before new weights go in: an old record never vouches for them, and a write killed before the new
    config.json leaves none (a clear error on load), not the previous model's read with the new weights."""
    manifest_path(directory, "model").unlink(missing_ok=True)
    for name in (CONFIG_FILE, RETROFIT_FILE):
        (directory / name).unlink(missing_ok=True)


def damaged_model_file(path: Path, why: str) -> BurrowError:
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


def _first_mismatch(e: RuntimeError) -> str:
    """The first "size mismatch for NAME: …" line of a load_state_dict error (its whole text is many lines)."""
    lines = (ln.strip() for ln in str(e).splitlines())
    return next((ln for ln in lines if ln.startswith("size mismatch")), first_line(e))[:200]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Rebuild a model saved by :func:`save_model` from its directory (or its weights file)."""
    directory = Path(path)
    if directory.is_file():
        if directory.name != WEIGHTS_FILE:
            raise BurrowError(f"{directory} is a file, not a model or run directory")
        directory = directory.parent
    weights = directory / WEIGHTS_FILE
    if not weights.exists():
        raise BurrowError(f"{directory} holds no {WEIGHTS_FILE}; is it a burrow model directory?")
    _check_recorded_hash(directory, weights)
    try:
        data = read_json(directory / CONFIG_FILE)
    except BurrowError:
        if not (directory / CONFIG_FILE).exists():
            raise BurrowError(f"{directory} holds {WEIGHTS_FILE} but no {CONFIG_FILE} (its save was interrupted, or "
                              "the file was deleted); save the model again") from None
        raise damaged_model_file(directory / CONFIG_FILE, "not valid JSON") from None
    if not isinstance(data, dict):
        raise damaged_model_file(directory / CONFIG_FILE, f"not a model config: {data!r:.60}")
    try:  # valid JSON that this version cannot build (a newer burrow's field, a value out of range): say which
        config = ModelConfig.from_dict(data)
    except BurrowError as e:
        raise BurrowError(f"{directory / CONFIG_FILE}: {e}") from None
    model = build_model(config)
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(weights), strict=False, device=str(device))
    except (safetensors.SafetensorError, OSError) as e:  # truncated or overwritten weights
        raise damaged_model_file(weights, str(e)) from None
    except RuntimeError as e:  # load_state_dict: a weight's shape is not the one config.json builds
        raise BurrowError(f"{weights} does not match its config.json ({_first_mismatch(e)}); "
                          "re-save the model") from None
    if missing or unexpected:
        raise BurrowError(
            f"{weights} does not match its config.json (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); re-save the model"
        )
    _check_finite(model.state_dict().items(), weights)
    return model.to(device)


def _check_finite(tensors: Iterable[tuple[str, torch.Tensor]], path: Path) -> None:
    """No NaN or infinite weight: bytes overwritten in a file too large to hash (or saved that way)."""
    bad = next((name for name, p in tensors if p.is_floating_point() and not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise damaged_model_file(path, f"{bad} holds NaN or infinite values")


#: Weights files up to this size are checked against the SHA-256 recorded when they were saved (~40 ms for
#: the demo's 22 MB model here; a 1 GiB file ~2 s). Larger ones are checked for NaN and infinities only.
HASH_CHECK_BYTES = 1 << 30


def _check_recorded_hash(directory: Path, weights: Path) -> None:
    """A weights file whose bytes changed since :func:`save_model` wrote it (same size, other content)
    is an error; without a readable record (a model saved elsewhere) there is nothing to compare."""
    try:
        manifest = read_manifest(directory, "model")
    except BurrowError:
        return  # a damaged record: the weights may still be fine, and loading checks their layout
    recorded = manifest.get("weights_sha256") if manifest is not None else None
    if recorded and weights.stat().st_size <= HASH_CHECK_BYTES and file_sha256(weights) != recorded:
        raise damaged_model_file(weights, "its SHA-256 differs from the one recorded when it was saved")


# --- retrofit directories: new weights + a reference to the frozen Hugging Face base -------------------


@dataclass(frozen=True)
class BaseRef:
    """Which pretrained model a retrofit starts from."""

    kind: str  # "burrow" | "hf"
    source: str  # burrow run/model directory, or HF name/directory (``smollm2`` kept as is: portable)
    gguf_file: str | None = None
    weights: list[Any] | None = None  # a HF base's weight files when local (hf_weights_id); None: not checked

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to config.json and ``retrofit.json``)."""
        return dataclasses.asdict(self)

    def same_model(self, other: dict[str, Any]) -> bool:
        """Whether ``other`` (a recorded :meth:`to_dict`) names the same base, its weights aside."""
        return all(other.get(k) == v for k, v in self.to_dict().items() if k != "weights")


def hf_weights_id(source: str, gguf_file: str | None) -> list[Any] | None:
    """What identifies a Hugging Face base's weights on this disk, cheaply: per weight file (the GGUF, or the
    folder's safetensors/bin files) its name, size and a hash of its first and last MiB; None for a hub id
    (nothing local to read)."""
    path, gguf = resolve_hf_base(source, gguf_file)
    folder = Path(path).expanduser()
    if gguf:
        files = [folder / gguf]
    elif folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    else:
        return None
    out: list[Any] = []
    for f in files:
        if not f.is_file():
            return None
        size = f.stat().st_size
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
        out.append([f.name, size, h.hexdigest()[:16]])
    return out


def save_hf_retrofit(model: RetrievalLM, directory: Path, ref: BaseRef) -> Path:
    """Write a HF retrofit's new weights, its RETRO config and the base reference into ``directory``."""
    assert isinstance(model, HFRetro)
    directory.mkdir(parents=True, exist_ok=True)
    _forget_previous(directory)
    weights = {k: v.detach().contiguous() for k, v in model.new_state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        safetensors.torch.save_file(weights, str(tmp))
    write_json(directory / CONFIG_FILE, model.config.to_dict())
    write_json(directory / RETROFIT_FILE, ref.to_dict())
    write_manifest(directory, "model", config=model.config.to_dict(), retrofit=ref.to_dict(),
                   parameters=sum(v.numel() for v in weights.values()),
                   weights_sha256=file_sha256(directory / WEIGHTS_FILE))
    return directory


def load_new_weights(model: HFRetro, directory: Path) -> None:
    """Load a HF retrofit's new weights (CCA layers + encoder) from ``directory`` into ``model`` (checked as
    :func:`load_model` checks a model's: the recorded SHA-256, and no NaN or infinite value)."""
    _check_recorded_hash(directory, directory / WEIGHTS_FILE)
    try:
        weights = safetensors.torch.load_file(str(directory / WEIGHTS_FILE))
    except (safetensors.SafetensorError, OSError) as e:  # truncated or overwritten weights
        raise damaged_model_file(directory / WEIGHTS_FILE, str(e)) from None
    _check_finite(weights.items(), directory / WEIGHTS_FILE)
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise BurrowError(f"{directory}: retrofit weights do not match its config.json "
                          f"({_first_mismatch(e)})") from None
    new_missing = [n for n in missing if not n.startswith("base.")]
    if new_missing or unexpected:
        raise BurrowError(f"{directory}: retrofit weights do not match its config.json (missing "
                          f"{new_missing[:3]}, unexpected {unexpected[:3]})")


def load_retrofit_dir(directory: str | Path, device: str | torch.device = "cpu") -> RetrievalLM:
    """A retro-fitted model from a model directory (``RUN/final`` or a checkpoint)."""
    directory = Path(directory)
    if not (directory / RETROFIT_FILE).exists():
        return load_model(directory, device=device)  # a burrow base: an ordinary RETRO model
    recorded = read_json(directory / RETROFIT_FILE)
    try:
        ref = BaseRef(**recorded)
    except TypeError:  # a field missing or unknown: not a record this burrow wrote
        raise BurrowError(f"{directory / RETROFIT_FILE} is damaged (not a base reference: {recorded!r:.120}); "
                          "restore it, or RETRO-fit the base again") from None
    if ref.weights is not None and hf_weights_id(ref.source, ref.gguf_file) != ref.weights:
        raise BurrowError(f"{directory} was RETRO-fitted on other weights of {ref.source} than are there now (its "
                          "weight files changed): restore that base, or RETRO-fit the new one")
    cfg = ModelConfig.from_dict(read_json(directory / CONFIG_FILE))
    model = HFRetro(load_hf_causal_lm(ref.source, ref.gguf_file), cfg)
    load_new_weights(model, directory)
    return model.to(device)


def load_model_dir(path: Path, device: str | torch.device = "cpu") -> RetrievalLM:
    """``load_model``, or the RETRO-fit loader for a directory that holds only a retrofit's new weights."""
    if (path / RETROFIT_FILE).exists():
        return load_retrofit_dir(path, device)
    return load_model(path, device=device)


# --- run directories ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPaths:
    """Where a run directory keeps each of its parts."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def checkpoint(self, step: int) -> Path:
        """Directory of the checkpoint taken after ``step`` optimizer steps."""
        return self.checkpoints / f"step_{step:06d}"


def list_checkpoints(paths: RunPaths) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (temporary directories of killed writes are ignored)."""
    if not paths.checkpoints.is_dir():
        return []
    found = []
    for p in paths.checkpoints.iterdir():
        match = _STEP_DIR.match(p.name)
        if match and (p / STATE_FILE).exists():
            found.append((int(match.group(1)), p))
    return sorted(found)


def weights_id(source: str | Path) -> Any:
    """What identifies the weights :func:`load_named_model` reads from ``source``, cheaply (for cache keys): the
    weights hash in the manifest of the model folder, of ``final/`` or of the newest checkpoint (what
    :func:`load_run` loads); else the size and time of every file under it; a name that is no path (a Hugging
    Face id, a short name) as it is."""
    path = Path(source)
    if not path.exists():
        return str(source)
    if path.is_dir():
        paths = RunPaths(path)
        for d in (path, paths.final, *(c for _, c in reversed(list_checkpoints(paths)))):
            try:
                manifest = read_manifest(d, "model")
            except BurrowError:
                continue
            if manifest and manifest.get("weights_sha256"):
                return [d.name, manifest["weights_sha256"]]
    return files_id(path)


def load_run(run: str | Path, device: str | torch.device = "cpu") -> RetrievalLM:
    """The model of run directory ``run``: ``final/`` when finished, else its newest checkpoint."""
    paths = RunPaths(Path(run))
    if (paths.final / WEIGHTS_FILE).exists():
        return load_model_dir(paths.final, device)
    checkpoints = list_checkpoints(paths)
    if not checkpoints:
        raise BurrowError(f"{run} holds no trained model (no final/ and no checkpoints); train it first")
    errors = []
    for step, path in reversed(checkpoints):  # the newest that loads: a damaged one is passed over
        try:
            model = load_model_dir(path, device)
        except BurrowError as e:
            log.warning("%s; trying an earlier checkpoint", e)
            errors.append(e)
            continue
        if _finished(paths):  # but final/ was deleted or moved
            log.warning("%s finished but its final/ model is missing; loading its newest intact checkpoint "
                        "(step %d)", run, step)
        else:
            log.warning("%s has not finished; loading its newest intact checkpoint (step %d)", run, step)
        return model
    state = "has no final/ model" if _finished(paths) else "has not finished"
    raise BurrowError(f"{run} {state} and none of its checkpoints can be loaded (the newest: {errors[0]})")


def _finished(paths: RunPaths) -> bool:
    """Whether the run recorded its end (train.manifest.json), whatever became of its final/ since."""
    try:
        return read_manifest(paths.root, "train") is not None
    except BurrowError:
        return False


def load_named_model(path: str | Path) -> tuple[str, RetrievalLM]:
    """(name, model) from a model directory (``model.safetensors``, a retrofit's new weights included)
    or a training run directory (its ``final/`` model, else its newest checkpoint, via :func:`load_run`)."""
    p = Path(path)
    if (p / RETROFIT_FILE).exists():  # a Hugging Face retrofit's model dir: new weights + a base reference
        return (p.parent.name if p.name == "final" else p.name), load_retrofit_dir(p)
    if (p / WEIGHTS_FILE).exists() or p.is_file():
        name = p.parent.name if p.name == "final" or p.is_file() else p.name
        return name, load_model(p)
    return require_model_path(p).name, load_run(p)
