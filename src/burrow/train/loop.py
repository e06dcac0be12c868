"""The training loop: build (or resume) a run, step AdamW over micro-batches, validate, checkpoint, finish.

Shape legend: b sequences, n tokens, v vocabulary, L chunks per sequence, k neighbours, r retrieved.

The loss is the mean cross-entropy over every target of an optimizer step: each micro-batch adds
its summed loss divided by the step's target count, so gradient accumulation changes nothing but
memory use. A run re-run on the same directory resumes from its newest checkpoint and continues
exactly as the uninterrupted run would (same data order, LR, RNG, optimizer state).

Under fp16 autocast the loss is scaled dynamically (:class:`LossScaling`): gradients too small for fp16
would flush to zero otherwise. A step whose gradients overflow is skipped (no update) but counted: the
step number, and so the data order and the LR schedule, advance as in every other step.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from burrow.artefacts import atomic_path, read_json, read_manifest, write_json, write_manifest
from burrow.device import autocast, autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.model import ModelConfig, Transformer, build_model, save_model
from burrow.model.compile import compile_model
from burrow.model.io import load_run
from burrow.model.loss import loss_sum
from burrow.train.checkpoint import (
    DCP_DIR,
    RunPaths,
    SaveFn,
    list_checkpoints,
    load_checkpoint,
    load_sharded,
    load_state,
    save_checkpoint,
    set_rng_state,
    write_model_atomically,
)
from burrow.train.config import RESUMABLE_FIELDS, TrainConfig, check_run_out, resolve_model_config
from burrow.train.dataset import IGNORE, Batch, Split, TrainData, build_data, check_data, open_sources
from burrow.train.optim import build_optimizer, lr_at, set_lr

log = logging.getLogger(__name__)

RUN_KIND = "train"  # manifest kind of a finished run

# load_run: model I/O
__all__ = ["LossScaling", "ModelSetup", "TrainResult", "clip_and_step", "evaluate_loss", "load_run", "scaled_loss",
           "train", "train_step"]


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    run_dir: Path  # the run directory
    model_dir: Path  # RUN/final, loadable with ``load_model``
    steps: int  # optimizer steps of the finished run
    loss: float | None  # training loss of the last step
    val_loss: float | None  # validation loss at the end
    tokens_per_second: float  # training throughput of this call (0 when nothing ran)
    seconds: float  # wall time of the steps run by this call
    resumed_from: int | None = None  # checkpoint step this call resumed from
    skipped: bool = False  # the run had already finished; nothing was done


@dataclass
class ModelSetup:
    """A model :func:`train` does not build from ``config.model`` (RETRO-fitting: a frozen base plus new
    modules). Only parameters with ``requires_grad`` are optimized."""

    # The model's config: recorded in config.json and compared when the run resumes.
    config: ModelConfig
    # Returns the model with its initial weights; called after the run's seed is set.
    build: Callable[[], nn.Module]
    # Writes a loadable model directory (checkpoints and final/); e.g. only the new weights.
    save: SaveFn = save_model
    # Loads what ``save`` wrote in a checkpoint directory into the built model (resuming).
    load: Callable[[nn.Module, Path], None] | None = None
    # Extra top-level entries of the run's config.json (e.g. which base was retro-fitted).
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossScaling:
    """Dynamic loss scaling of an fp16 run: its GradScaler and the steps skipped so far (gradients with inf or
    NaN at the scale of the moment: no update, the scale halves). bf16 and fp32 have fp32's exponent range and
    run without one. Saved in every checkpoint, so a resumed run continues with the same scale."""

    scaler: torch.amp.GradScaler
    skipped: int = 0

    @classmethod
    def of(cls, device: torch.device, dtype: torch.dtype | None) -> LossScaling | None:
        """Scaling for autocast ``dtype`` on ``device``: fp16 only (initial scale 2**16, halved on a skipped step,
        doubled after 2000 steps in a row without one)."""
        return cls(torch.amp.GradScaler(device.type)) if dtype == torch.float16 else None

    def scale(self) -> float:
        """The scale the next step's backward runs with."""
        return float(self.scaler.get_scale())

    def state(self) -> dict[str, Any]:
        """The checkpoint entries (``state.pt``)."""
        return {"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint's state; one without it (a bf16/fp32 run's, or one written before
        fp16 runs were scaled) leaves the scaler at its initial scale."""
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
            self.skipped = int(state.get("skipped_steps", 0))
        else:
            log.info("the checkpoint holds no loss scale; fp16 loss scaling starts again at %g", self.scale())

    def step_record(self, scale: float) -> dict[str, Any]:
        """The metrics of a step run with loss scale ``scale``: that scale and the run's skipped steps so far; a
        step the scaler skipped (its scale backed off) is counted here, and its gradient norm (inf or NaN) is
        null."""
        record: dict[str, Any] = {"loss_scale": scale}
        if self.scale() < scale:
            self.skipped += 1
            record["grad_norm"] = None
            log.debug("fp16 gradients overflowed at loss scale %g: step skipped", scale)
        record["skipped_steps"] = self.skipped
        return record

    def record(self) -> dict[str, Any]:
        """The run's final scale and skipped steps (manifest)."""
        return {"loss_scale": self.scale(), "skipped_steps": self.skipped}


def train(config: TrainConfig, setup: ModelSetup | None = None) -> TrainResult:
    """Train (or resume, or skip when finished) the run described by ``config`` (and ``setup``, if given)."""
    paths = RunPaths(config.out)
    check_run_out(paths.root)
    device = pick_device(config.device)  # an unusable device is refused before the run directory is written
    sources = open_sources(config)
    if setup is not None:
        model_cfg = setup.config
    else:
        model_cfg = resolve_model_config(config.model, sources.vocab_size, sources.chunk_size, config.seq_len,
                                         sources.store.pad_id)
    check_data(sources, config, int(model_cfg.chunk_size), bool(model_cfg.retro))  # before the run is written
    record = {"train": config.to_dict(), "model": model_cfg.to_dict(), "data": sources.fingerprint,
              **(setup.record if setup is not None else {})}
    resume = _prepare_run(paths, record, config.force)
    done = read_manifest(paths.root, RUN_KIND)
    if done is not None:
        log.info("%s already finished (%d steps); nothing to do (--force retrains)", paths.root, done["steps"])
        return TrainResult(paths.root, paths.final, done["steps"], done.get("loss"), done.get("val_loss"),
                           0.0, 0.0, skipped=True)
    data = build_data(sources, config, model_cfg.chunk_size, model_cfg.retro)
    dtype = autocast_dtype(device, config.precision)
    torch.manual_seed(config.seed)
    built = setup.build() if setup is not None else build_model(model_cfg)
    model = cast(Transformer, built.to(device))  # a setup's model is used through the same interface
    optimizer = build_optimizer(model, config)
    scaling = LossScaling.of(device, dtype)
    start, last_loss = 0, None
    if resume is not None:
        start, last_loss, resume = _resume_newest_intact(paths, model, optimizer, device, setup, scaling)
        log.info("resuming %s from step %d (%s)", paths.root, start, resume.name)
    log.info("training %s (%s, %.1fM parameters) on %s, autocast %s", model_cfg.name or config.model,
             "RETRO" if model_cfg.retro else "baseline", model.num_parameters(non_embedding=False) / 1e6,
             device, dtype)
    save = setup.save if setup is not None else save_model
    result = _run(config, paths, model, optimizer, data, device, dtype, start, last_loss, save, scaling)
    result.resumed_from = start if resume is not None else None
    return result


def _prepare_run(paths: RunPaths, record: dict[str, Any], force: bool) -> Path | None:
    """Check an existing run directory against this run; write config.json; return the checkpoint
    to resume from (None: start afresh)."""
    if force:
        for p in (paths.checkpoints, paths.final, paths.tensorboard):
            shutil.rmtree(p, ignore_errors=True)
        for f in (paths.metrics, paths.root / f"{RUN_KIND}.manifest.json"):
            f.unlink(missing_ok=True)
    checkpoints = list_checkpoints(paths)
    started = checkpoints or read_manifest(paths.root, RUN_KIND) is not None
    if started and paths.config.exists():
        _check_compatible(paths.root, read_json(paths.config), record)
    write_json(paths.config, record)
    return checkpoints[-1][1] if checkpoints else None


def _check_compatible(root: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """A one-line error when ``root`` was made from other data, another model or another config."""
    for key, what in (("tokenizer", "tokenizer"), ("memory", "memory"), ("tokens", "token store"),
                      ("valid_tokens", "validation store")):
        a, b = old.get("data", {}).get(key), new["data"].get(key)
        if a != b:
            raise BurrowError(f"{root} was trained with another {what} ({a} here, {b} now); "
                              "use another -o or --force to start it again")
    old_model = old.get("model")
    if old_model is not None and "pad_id" not in old_model:  # recorded before neighbour padding was masked:
        old_model = {**old_model, "pad_id": new["model"].get("pad_id")}  # resumes with the mask on
    if old_model != new["model"]:
        diff = sorted(k for k in new["model"] if (old_model or {}).get(k) != new["model"][k])
        raise BurrowError(f"{root} holds a run of another model (differs in {diff}); use another -o or --force")
    diff = sorted(k for k in new["train"] if k not in RESUMABLE_FIELDS
                  and old.get("train", {}).get(k) != new["train"][k])
    if diff:
        changes = ", ".join(f"{k}: {old['train'].get(k)} -> {new['train'][k]}" for k in diff)
        raise BurrowError(f"{root} was started with other settings ({changes}); use another -o or --force")


def _resume_newest_intact(paths: RunPaths, model: nn.Module, optimizer: torch.optim.Optimizer,
                          device: torch.device, setup: ModelSetup | None,
                          scaling: LossScaling | None = None) -> tuple[int, float | None, Path]:
    """:func:`_resume` from the newest checkpoint that loads; a damaged newer one (truncated weights or
    state) is passed over with a warning, and retaken when training reaches its step again."""
    checkpoints = list_checkpoints(paths)
    for _, path in reversed(checkpoints):
        try:
            step, loss = _resume(path, model, optimizer, device, setup, scaling)
        except BurrowError as e:
            log.warning("cannot resume from %s: %s; falling back to the checkpoint before it", path.name, e)
            continue
        return step, loss, path
    raise BurrowError(f"none of the {len(checkpoints)} checkpoint(s) of {paths.root} can be loaded (see the "
                      "warnings above); re-run with --force to start the run again")


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
            setup: ModelSetup | None = None, scaling: LossScaling | None = None) -> tuple[int, float | None]:
    """Load checkpoint ``path`` into ``model``, ``optimizer`` and ``scaling``; restore RNG; return its step and
    loss."""
    if setup is not None and setup.load is not None:
        setup.load(model, path)
        state = load_state(path)
    else:
        saved, state = load_checkpoint(path, device)
        model.load_state_dict(saved.state_dict())
    if (path / DCP_DIR).is_dir():  # written under torchrun: the optimizer state is sharded
        load_sharded(path, model, optimizer)
    else:
        optimizer.load_state_dict(state["optimizer"])
    if scaling is not None:
        scaling.load(state)
    set_rng_state(state["rng"])
    return int(state["step"]), state.get("loss")


class _Metrics:
    """metrics.jsonl (truncated to the resumed step, so the file is the run's one loss curve) and
    TensorBoard scalars when TensorBoard is installed."""

    def __init__(self, paths: RunPaths, start: int) -> None:
        self.path = paths.metrics
        kept = []
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if _step_of(line) <= start]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(paths.tensorboard), purge_step=start + 1)
        except ImportError:
            log.debug("TensorBoard not installed; metrics go to %s only", self.path)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> float:
    """The step of a metrics line; a line cut short by a crash or a full disk sorts after every step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _loss_sum(model: nn.Module, batch: Batch, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """Summed cross-entropy over the batch's targets (fp32, whatever the autocast)."""
    batch = batch.to(device)
    with autocast(device, dtype):  # fused with the output projection: the (b, n, v) logits are never held
        return loss_sum(model, batch.tokens, batch.labels, batch.neighbours, batch.neighbour_mask, IGNORE)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro: list[Batch], clip: float,
               device: torch.device, dtype: torch.dtype | None,
               scaler: torch.amp.GradScaler | None = None) -> tuple[float, float]:
    """One optimizer step over micro-batches; returns (mean loss per target, gradient norm before clipping).

    With ``scaler`` (fp16) each micro-batch's loss is scaled before its backward and the gradients unscaled
    before clipping; a step with inf/NaN gradients changes no parameter (its norm is then inf or NaN).
    """
    total = max(1, sum(b.n_targets for b in micro))
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for batch in micro:
        loss = _loss_sum(model, batch, device, dtype)
        scaled_loss(loss / total, scaler).backward()
        loss_sum += loss.detach()
    norm = clip_and_step(model.parameters(), optimizer, clip, scaler)
    return float(loss_sum) / total, float(norm)


def scaled_loss(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """``loss`` times the scaler's scale (``loss`` itself without a scaler)."""
    return scaler.scale(loss) if scaler is not None else loss


def clip_and_step(params: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer, clip: float,
                  scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """Clip the gradients' norm to ``clip`` (0: no clipping) and step; return the norm before clipping. A
    ``scaler`` unscales first (the clip sees the true gradients), skips the update when a gradient is inf or NaN
    and updates its scale."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return norm


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except the modules whose parameters are all frozen (a RETRO-fit's base blocks): they
    stay in eval mode, so their dropout is off and the fit learns against the base as it runs at evaluation
    (a Hugging Face base: ``HFRetro.train`` does the same)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


@torch.no_grad()
def evaluate_loss(model: Transformer, split: Split, seqs: np.ndarray, micro_batch: int, device: torch.device,
                  dtype: torch.dtype | None) -> float:
    """Mean cross-entropy per target over sequences ``seqs`` of ``split``."""
    was_training = model.training
    model.eval()
    loss, count = 0.0, 0
    for i in range(0, len(seqs), micro_batch):
        batch = split.batch(seqs[i : i + micro_batch])
        loss += float(_loss_sum(model, batch, device, dtype))
        count += batch.n_targets
    if was_training:
        train_mode(model)
    return loss / max(1, count)


def _run(config: TrainConfig, paths: RunPaths, model: Transformer, optimizer: torch.optim.Optimizer,
         data: TrainData, device: torch.device, dtype: torch.dtype | None, start: int,
         loss: float | None, save: SaveFn = save_model, scaling: LossScaling | None = None) -> TrainResult:
    """Steps ``start`` .. ``config.steps``: metrics, validation, checkpoints; then ``final/``."""
    metrics = _Metrics(paths, start)
    valid_seqs = data.valid_sequences(config.valid_sequences)
    tokens_per_step = config.batch_size * config.seq_len
    bar = tqdm(total=config.steps, initial=start, unit="step", desc="train", disable=not config.progress,
               dynamic_ncols=True)
    train_mode(model)
    step_model = compile_model(model) if config.compile else model  # shares model's parameters
    seconds, val_loss = 0.0, None
    try:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            lr = lr_at(step, config)
            set_lr(optimizer, lr)
            seqs = data.step_sequences(step, config.batch_size)  # (batch_size,)
            micro = [data.train.batch(s) for s in np.split(seqs, config.grad_accum)]
            scale = scaling.scale() if scaling is not None else 0.0
            loss, norm = train_step(step_model, optimizer, micro, config.clip, device, dtype,
                                    scaling.scaler if scaling is not None else None)
            dt = time.perf_counter() - t0
            if config.compile and step == start:
                log.info("first step %.1f s (torch.compile included)", dt)
            seconds += dt
            record: dict[str, Any] = {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": norm,
                                      "tokens": (step + 1) * tokens_per_step, "tokens_per_s": tokens_per_step / dt}
            if scaling is not None:
                record.update(scaling.step_record(scale))
            if _due(step + 1, config.eval_every, config.steps):
                val_loss = evaluate_loss(model, data.valid, valid_seqs, config.micro_batch, device, dtype)
                record["val_loss"] = val_loss
                log.info("step %d/%d: loss %.4f, val loss %.4f, %.0f tokens/s", step + 1, config.steps, loss,
                         val_loss, tokens_per_step / dt)
            metrics.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_step / dt:,.0f}",
                            **({"val": f"{val_loss:.3f}"} if val_loss is not None else {}))
            if _due(step + 1, int(config.checkpoint_every or 0), config.steps):
                extra = {"loss": loss, **(scaling.state() if scaling is not None else {})}
                save_checkpoint(paths, step + 1, model, optimizer, extra, config.keep_checkpoints, save)
    finally:
        bar.close()
        metrics.close()
    if start == config.steps:  # resumed from the last checkpoint (killed before final/): the last step's validation
        val_loss = evaluate_loss(model, data.valid, valid_seqs, config.micro_batch, device, dtype)
    return _finish(config, paths, model, loss, val_loss, seconds, (config.steps - start) * tokens_per_step, save,
                   scaling)


def _due(done: int, every: int, total: int) -> bool:
    """True after step ``done`` when an every-``every``-steps action is due (always after the last)."""
    return done == total or (every > 0 and done % every == 0)


def _finish(config: TrainConfig, paths: RunPaths, model: Transformer, loss: float | None,
            val_loss: float | None, seconds: float, tokens: int, save: SaveFn = save_model,
            scaling: LossScaling | None = None) -> TrainResult:
    """Write ``final/`` and the run's manifest (last: it marks the run finished)."""
    write_model_atomically(model, paths.final, save)
    rate = tokens / seconds if seconds > 0 else 0.0
    scaled_run = scaling.record() if scaling is not None else {}
    write_manifest(paths.root, RUN_KIND, steps=config.steps, loss=loss, val_loss=val_loss,
                   tokens=config.steps * config.batch_size * config.seq_len, model_dir="final",
                   tokens_per_second_last_call=rate, **scaled_run)
    log.info("finished %s: %d steps, loss %s, val loss %s -> %s", paths.root, config.steps, _four(loss),
             _four(val_loss), paths.final)
    if scaling is not None:
        log.info("fp16 loss scale %g at the end; %d of %d steps skipped (inf/NaN gradients)", scaled_run["loss_scale"],
                 scaling.skipped, config.steps)
    return TrainResult(paths.root, paths.final, config.steps, loss, val_loss, rate, seconds)


def _four(x: float | None) -> str:
    """A loss for the log: four decimals (the manifest keeps every digit), or n/a."""
    return "n/a" if x is None else f"{x:.4f}"
