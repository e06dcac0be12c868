"""`burrow train` under torchrun: DDP or FSDP2, one process per device, sharded resumable checkpoints.

    torchrun --standalone --nproc_per_node 2 -m burrow train -m tiny -o runs/x --memory mem ...

Each optimizer step's global batch (``TrainData.step_sequences``, a function of seed and step) is cut
into ``world`` contiguous slices, one per process, and the loss is the summed cross-entropy of all of
them divided by the global target count (all-reduced), so N processes take the very step one process
takes (up to the order of floating-point sums). gloo on the CPU, NCCL on CUDA (``cuda:LOCAL_RANK``).
Every process starts from the same weights; each step's dropout draws from a stream of its own, seeded by
(seed, step, rank), so the processes' masks differ and a resumed run (on any number of processes) draws
what the uninterrupted one did.

Checkpoints: ``step_N/dcp/`` holds model and optimizer state in torch.distributed.checkpoint's sharded
format, which reshards on load (resume on any number of processes); ``step_N/`` also holds the full
model (safetensors, loadable alone, as in one-process runs) and ``state.pt`` (step, loss, RNG, world
size). A one-process checkpoint (no ``dcp/``) resumes too: every rank reads its whole model and optimizer
state and keeps its share.
Every process writes its shards into the run directory itself: on several nodes it must be shared.

fp16 runs scale the loss (:class:`~burrow.train.loop.LossScaling`) with torch.amp.GradScaler under DDP and
FSDP2 alike: DDP's gradients are the same on every rank after its all-reduce, and FSDP2's are DTensors, whose
inf/NaN check is reduced (max) over the ranks, so every rank skips the same steps. (FSDP1's ShardedGradScaler
is not needed, and fails with fused AdamW: its inf flag, a sum over ranks of shape (1,), is subtracted from
AdamW's step count.) The scale is in ``state.pt``, the same on every rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from burrow.artefacts import read_manifest
from burrow.device import autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.model import ModelConfig, build_model, load_model, save_model
from burrow.model.compile import compile_model
from burrow.train.checkpoint import (
    DCP_DIR,
    STATE_FILE,
    RunPaths,
    list_checkpoints,
    load_sharded,
    load_state,
    prune_checkpoints,
    rng_state,
    set_rng_state,
)
from burrow.train.config import TrainConfig, resolve_model_config
from burrow.train.dataset import Batch, TrainData, build_data, open_sources
from burrow.train.loop import (
    RUN_KIND,
    LossScaling,
    ModelSetup,
    TrainResult,
    _due,
    _finish,
    _loss_sum,
    _Metrics,
    _prepare_run,
    clip_and_step,
    evaluate_loss,
    scaled_loss,
    train_mode,
)
from burrow.train.loop import train as train_one_process
from burrow.train.optim import build_optimizer, lr_at, set_lr

log = logging.getLogger(__name__)

__all__ = ["Dist", "launched_by_torchrun", "train", "train_distributed"]


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (it sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def train(config: TrainConfig, setup: ModelSetup | None = None) -> TrainResult:
    """:func:`burrow.train.loop.train` in one process, :func:`train_distributed` under torchrun."""
    if launched_by_torchrun():
        if setup is not None:
            raise BurrowError("RETRO-fitting runs in one process; run it without torchrun")
        return train_distributed(config)
    return train_one_process(config, setup)


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 writes config, metrics, the full model and the run manifest."""
        return self.rank == 0


def init_distributed(config: TrainConfig) -> Dist:
    """Join torchrun's process group: NCCL on CUDA (one device per local rank), else gloo."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if config.batch_size % world:
        raise BurrowError(f"{world} processes cannot split a batch of {config.batch_size} sequences; make "
                          "--batch-size a multiple of --nproc_per_node")
    if (config.batch_size // world) % config.grad_accum:
        raise BurrowError(f"grad-accum ({config.grad_accum}) must divide each process's "
                          f"{config.batch_size // world} sequences (batch-size / nproc_per_node)")
    device = pick_device(config.device)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():  # else CUDA's "invalid device ordinal" traceback on the extra ranks
            raise BurrowError(f"{int(os.environ.get('LOCAL_WORLD_SIZE', local + 1))} processes on this node but "
                              f"{torch.cuda.device_count()} GPU(s); make --nproc_per_node at most the GPU count")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


def train_distributed(config: TrainConfig) -> TrainResult:
    """Train (or resume, or skip when finished) ``config``'s run as one of torchrun's processes."""
    d = init_distributed(config)
    try:
        return _train(config, d)
    finally:
        dist.destroy_process_group()


def _train(config: TrainConfig, d: Dist) -> TrainResult:
    paths = RunPaths(config.out)
    sources = open_sources(config)
    model_cfg = resolve_model_config(config.model, sources.vocab_size, sources.chunk_size, config.seq_len,
                                     sources.store.pad_id)
    record = {"train": config.to_dict(), "model": model_cfg.to_dict(), "data": sources.fingerprint,
              "world_size": d.world}
    if d.main:
        _prepare_run(paths, record, config.force)
    dist.barrier()
    done = read_manifest(paths.root, RUN_KIND)
    if done is not None:
        return TrainResult(paths.root, paths.final, done["steps"], done.get("loss"), done.get("val_loss"),
                           0.0, 0.0, skipped=True)
    if d.main:  # RETRO may compute the neighbour table: once, before the others read it
        data = build_data(sources, config, model_cfg.chunk_size, model_cfg.retro)
    dist.barrier()
    if not d.main:
        data = build_data(sources, config, model_cfg.chunk_size, model_cfg.retro)
    torch.manual_seed(config.seed)
    model = build_model(model_cfg).to(d.device)  # the same initial weights in every process
    wrapped = _wrap(model, config.parallel, d)
    optimizer = build_optimizer(model, config)  # after fully_shard: over the sharded parameters
    dtype = autocast_dtype(d.device, config.precision)
    scaling = LossScaling.of(d.device, dtype)
    start, loss = 0, None
    checkpoints = list_checkpoints(paths)
    if checkpoints:
        start, loss = _resume(checkpoints[-1][1], model, optimizer, config, d, scaling)
        if d.main:
            log.info("resuming %s from step %d on %d processes", paths.root, start, d.world)
    result = _run(config, paths, model, wrapped, optimizer, data, d, dtype, start, loss, model_cfg, scaling)
    result.resumed_from = start if checkpoints else None
    return result


def _wrap(model: nn.Module, parallel: str, d: Dist) -> nn.Module:
    """DDP around the model, or FSDP2: ``fully_shard`` on every block, then on the whole model."""
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:  # type: ignore[union-attr]
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optim": osd}


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
            d: Dist, scaling: LossScaling | None = None) -> tuple[int, float | None]:
    """Load checkpoint ``path`` (sharded or a one-process one: on any number of processes, DDP or FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    state = load_state(path)
    if (path / DCP_DIR).is_dir():
        load_sharded(path, model, optimizer)
    else:  # a one-process checkpoint: its whole model and optimizer state, read by every rank and sharded as needed
        plain = load_model(path, device="cpu")
        plain_optimizer = build_optimizer(plain, config)
        plain_optimizer.load_state_dict(state["optimizer"])
        full = _state(plain, plain_optimizer)
        set_state_dict(model, optimizer, model_state_dict=full["model"], optim_state_dict=full["optim"],
                       options=StateDictOptions(full_state_dict=True))
    if scaling is not None:
        scaling.load(state)
    set_rng_state(state["rng"])
    return int(state["step"]), state.get("loss")


def _full_model(model: nn.Module, parallel: str, cfg: ModelConfig, d: Dist) -> nn.Module | None:
    """On rank 0: the whole model as a plain module (FSDP gathers its shards; every rank must call this)."""
    if parallel != "fsdp":
        return model if d.main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not d.main:
        return None
    plain = build_model(cfg)
    plain.load_state_dict(full)
    return plain


def _save(paths: RunPaths, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, loss: float,
          config: TrainConfig, cfg: ModelConfig, d: Dist, scaling: LossScaling | None = None) -> None:
    """Checkpoint ``step``: every rank writes its DCP shards into a hidden directory; rank 0 adds the full
    model and state.pt, then moves it into place (a killed run never leaves one that looks complete)."""
    import torch.distributed.checkpoint as dcp

    tmp = paths.checkpoints / f".step_{step:06d}.dist"
    if d.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dcp.save(_state(model, optimizer), checkpoint_id=str(tmp / DCP_DIR))
    full = _full_model(model, config.parallel, cfg, d)
    if full is not None:
        save_model(full, tmp)  # type: ignore[arg-type]
        torch.save({"step": step, "loss": loss, "rng": rng_state(), "world_size": d.world, "format": "dcp",
                    **(scaling.state() if scaling is not None else {})}, tmp / STATE_FILE)
        dest = paths.checkpoint(step)
        # a re-taken step: the old folder is moved aside in one rename, never deleted in place (a crash during
        # that rmtree left a half-deleted checkpoint that still looked complete); pruning removes leftovers
        old = dest.with_name(f".{dest.name}.replaced")
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
        prune_checkpoints(paths, config.keep_checkpoints)
    dist.barrier()


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of process ``rank`` in step ``step``: distinct per rank (one shared stream gave every rank
    the same dropout masks), a function of the step alone (no RNG state to carry across a resume)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0])


def _step(wrapped: nn.Module, optimizer: torch.optim.Optimizer, micro: list[Batch], clip: float, d: Dist,
          dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None = None) -> tuple[float, float]:
    """One optimizer step over this rank's micro-batches; the loss is over the GLOBAL batch's targets (``scaler``:
    fp16's loss scaling, as in :func:`burrow.train.loop.train_step`)."""
    counts = torch.tensor([float(sum(b.n_targets for b in micro))], dtype=torch.float64, device=d.device)
    dist.all_reduce(counts)
    total = max(1.0, float(counts))
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=d.device, dtype=torch.float64)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        no_sync = getattr(wrapped, "no_sync", None)  # DDP: all-reduce once, after the last micro-batch
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            loss = _loss_sum(wrapped, batch, d.device, dtype)  # type: ignore[arg-type]
            # DDP and FSDP average gradients over ranks: × world turns that mean into the global sum.
            scaled_loss(loss * (d.world / total), scaler).backward()
        loss_sum += loss.detach().double()
    dist.all_reduce(loss_sum)
    norm = clip_and_step(wrapped.parameters(), optimizer, clip, scaler)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    return float(loss_sum) / total, float(norm)


def _run(config: TrainConfig, paths: RunPaths, model: nn.Module, wrapped: nn.Module,
         optimizer: torch.optim.Optimizer, data: TrainData, d: Dist, dtype: torch.dtype | None, start: int,
         loss: float | None, cfg: ModelConfig, scaling: LossScaling | None = None) -> TrainResult:
    """Steps ``start`` .. ``config.steps`` (rank 0 writes metrics); checkpoints; then ``final/``."""
    metrics = _Metrics(paths, start) if d.main else None
    valid_seqs = data.valid_sequences(config.valid_sequences)
    tokens_per_step = config.batch_size * config.seq_len
    bar = tqdm(total=config.steps, initial=start, unit="step", desc=f"train ×{d.world}",
               disable=not (config.progress and d.main), dynamic_ncols=True)
    seconds, val_loss = 0.0, None
    train_mode(wrapped)
    # every rank scores the same sequences (FSDP's forward is collective); DDP's replica needs no sync
    evaluator: Any = model if config.parallel == "fsdp" else wrapped.module
    step_model = compile_model(wrapped) if config.compile else wrapped  # shares wrapped's parameters
    try:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            torch.manual_seed(step_seed(config.seed, step, d.rank))  # this rank's dropout in this step
            lr = lr_at(step, config)
            set_lr(optimizer, lr)
            mine = data.rank_sequences(step, config.batch_size, d.rank, d.world)  # (batch_size / world,)
            micro = [data.train.batch(s) for s in np.split(mine, config.grad_accum)]
            scale = scaling.scale() if scaling is not None else 0.0
            loss, norm = _step(step_model, optimizer, micro, config.clip, d, dtype,
                               scaling.scaler if scaling is not None else None)
            dt = time.perf_counter() - t0
            if config.compile and step == start and d.main:
                log.info("first step %.1f s (torch.compile included)", dt)
            seconds += dt
            record: dict[str, Any] = {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": norm,
                                      "tokens": (step + 1) * tokens_per_step, "tokens_per_s": tokens_per_step / dt,
                                      "processes": d.world}
            if scaling is not None:
                record.update(scaling.step_record(scale))
            if _due(step + 1, config.eval_every, config.steps):
                val_loss = evaluate_loss(evaluator, data.valid, valid_seqs, config.micro_batch, d.device, dtype)
                record["val_loss"] = val_loss
            if metrics is not None:
                metrics.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_step / dt:,.0f}")
            if _due(step + 1, int(config.checkpoint_every or 0), config.steps):
                _save(paths, step + 1, model, optimizer, loss, config, cfg, d, scaling)
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    if start == config.steps:  # resumed from the last checkpoint (killed before final/): the last step's validation
        val_loss = evaluate_loss(evaluator, data.valid, valid_seqs, config.micro_batch, d.device, dtype)
    full = _full_model(model, config.parallel, cfg, d)
    result = TrainResult(paths.root, paths.final, config.steps, loss, val_loss,
                         (config.steps - start) * tokens_per_step / seconds if seconds else 0.0, seconds)
    if full is not None:
        result = _finish(config, paths, full, loss, val_loss, seconds,  # type: ignore[arg-type]
                         (config.steps - start) * tokens_per_step, scaling=scaling)
    dist.barrier()
    return result
