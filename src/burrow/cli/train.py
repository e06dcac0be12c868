"""`burrow train`: train a baseline or RETRO model into a run directory (resumes when re-run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from burrow.cli.options import Force, MaybeDevice, MaybeK, MaybePrecision, MaybeSeqLen, NoProgress, out_option
from burrow.errors import BurrowError

if TYPE_CHECKING:
    from burrow.train.config import TrainConfig


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the root app."""
    app.command("train")(train)


def train(
    model: str | None = typer.Option(None, "--model", "-m", help="Preset (e.g. retro-cpu-small) or model TOML."),
    out: Path | None = out_option(None, "Run directory (re-run the command to resume)."),
    memory: Path | None = typer.Option(None, "--memory", help="Memory directory (needed for RETRO)."),
    tokens: Path | None = typer.Option(None, "--tokens", help="Token store to train on (default: the memory's)."),
    valid_tokens: Path | None = typer.Option(
        None, "--valid-tokens", help="Token store for validation (default: hold out the last 1% of sequences)."),
    config: Path | None = typer.Option(None, "--config", help="Run config TOML (a train table); flags override it."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (default 1000)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per optimizer step (default 8)."),
    seq_len: MaybeSeqLen = None,
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 6e-4)."),
    warmup: int | None = typer.Option(None, "--warmup", help="Warm-up steps (default min(750, steps/10))."),
    k: MaybeK = None,
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per step (default 1)."),
    clip: float | None = typer.Option(None, "--clip", help="Gradient-norm clip, 0 = off (default 1.0)."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Validation every N steps (default 100)."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="Checkpoint every N steps "
                                                "(default: as --eval-every)."),
    keep_checkpoints: int | None = typer.Option(None, "--keep-checkpoints", help="Checkpoints kept (default 2)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of init, dropout and data order (default 0)."),
    parallel: str | None = typer.Option(None, "--parallel", help="Under torchrun: ddp (default) or fsdp "
                                        "(FSDP2 fully_shard, for models that do not fit one device)."),
    device: MaybeDevice = None,
    precision: MaybePrecision = None,
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the training step (the first "
                                       "step compiles, cached on disk for the next run; pays on GPUs)."),
    no_progress: NoProgress = False,
    force: Force = False,
) -> None:
    """Train a baseline (any token store) or RETRO (a memory's chunks + precomputed neighbours).

    Under `torchrun --nproc_per_node N -m burrow train ...` it runs data-parallel (DDP, or FSDP2 with --parallel
    fsdp); gloo on the CPU, NCCL on CUDA. Re-run the command (with any N) to resume.
    """
    from burrow.train import TrainConfig

    options = dict(model=model, out=out, memory=memory, tokens=tokens, valid_tokens=valid_tokens, steps=steps,
                   batch_size=batch_size, seq_len=seq_len, lr=lr, warmup=warmup, k=k, grad_accum=grad_accum,
                   clip=clip, eval_every=eval_every, checkpoint_every=checkpoint_every,
                   keep_checkpoints=keep_checkpoints, seed=seed, parallel=parallel, device=device, precision=precision,
                   compile=compile_model or None,
                   progress=False if no_progress else None, force=force or None)
    given = {name: value for name, value in options.items() if value is not None}
    if config is not None:
        cfg = TrainConfig.from_toml(config, **given)
    else:
        if model is None or out is None:
            raise typer.BadParameter("--model and -o/--out are required (or give --config)")
        cfg = TrainConfig(**given)  # type: ignore[arg-type]
    _open_data(cfg)
    from burrow.footprint import FootprintConfig, track, training_flops
    from burrow.train import train as run_training

    rank = int(os.environ.get("RANK", "0"))
    footprint = FootprintConfig()
    footprint.enabled = footprint.enabled and rank == 0  # under torchrun rank 0 records the run's footprint
    try:
        with track(cfg.out, "train", footprint) as stage:
            result = run_training(cfg)
            stage.skipped = result.skipped
            stage.flops, stage.flops_formula = training_flops(result.model_dir,
                                                              result.tokens_per_second * result.seconds)
    except BurrowError:
        if rank != 0:  # under torchrun every rank fails alike: rank 0 says it once
            raise typer.Exit(2) from None
        raise
    if rank != 0:  # under torchrun rank 0 reports for all
        return
    if result.skipped:
        typer.echo(f"{result.run_dir} already finished ({result.steps} steps); --force retrains")
        return
    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
    loss = f"loss {result.loss:.4f}" if result.loss is not None else "loss n/a"
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    typer.echo(f"trained {result.steps} steps{resumed}: {loss}{val}, "
               f"{result.tokens_per_second:,.0f} tokens/s → {result.model_dir}")


def _open_data(cfg: TrainConfig) -> None:
    """Open the memory and token stores as training will: a wrong path is one line before torch and the
    training code load (~2.5 s). Then check the device, before the run directory holds anything."""
    from burrow.data.tokens import TokenStore
    from burrow.memory.memory import Memory
    from burrow.train.config import check_run_out

    check_run_out(Path(cfg.out))  # not a saved model's or a memory's folder (before footprint.json goes there)
    if cfg.memory is not None:
        Memory(cfg.memory)
    for store in (cfg.tokens, cfg.valid_tokens):
        if store is not None:
            TokenStore(store)
    if cfg.device not in (None, "auto", "cpu"):
        from burrow.device import pick_device

        pick_device(cfg.device)
