"""`burrow eval`: bits-per-byte of trained models (baseline, RETRO[OFF], RETRO[ON]), leakage and sweeps."""

from __future__ import annotations

from pathlib import Path

import typer

from burrow.cli.options import DEFAULT_K, Device, K, MaybeSeqLen, Precision, default_of
from burrow.evaluate.pipeline import EvalConfig
from burrow.evaluate.sweeps import DEFAULT_SWEEP_K


def eval_command(
    runs: list[Path] = typer.Argument(..., help="Run directories or model directories (a RETRO model is "
                                                "scored both [OFF] and [ON])."),
    memory: Path | None = typer.Option(None, "--memory", "-m", help="Memory directory: tokenizer, RETRO[ON] "
                                                                    "neighbours, leakage."),
    data: list[str] = typer.Option(..., "--data", "-d", help="Evaluation files or folders (repeat the option)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (report, plots, cached neighbours)."),
    k: K = DEFAULT_K,
    seq_len: MaybeSeqLen = default_of(EvalConfig, "seq_len"),
    leakage: bool = typer.Option(False, "--leakage", help="r(C) and bpb(α) (RETRO §2.6)."),
    sweep_k: bool = typer.Option(False, "--sweep-k",
                                 help=f"RETRO[ON] bpb at k = {', '.join(map(str, DEFAULT_SWEEP_K))}."),
    sweep_memory: bool = typer.Option(False, "--sweep-memory", help="RETRO[ON] bpb at memory fractions 1/16 … 1."),
    max_docs: int | None = typer.Option(None, "--max-docs", help="Score only the first N documents."),
    device: Device = default_of(EvalConfig, "device"),
    precision: Precision = default_of(EvalConfig, "precision"),
    batch_tokens: int = typer.Option(default_of(EvalConfig, "batch_tokens"), "--batch-tokens",
                                     help="Tokens per forward batch."),
) -> None:
    """Bits-per-byte of RUN... on whole documents of --data, side by side; leakage and sweeps on request."""
    from burrow.evaluate import DEFAULT_SWEEP_MEMORY, evaluate_runs, format_table

    config = EvalConfig(seq_len=seq_len, k=k, leakage=leakage, max_docs=max_docs, device=device,
                        precision=precision, batch_tokens=batch_tokens,
                        sweep_k=DEFAULT_SWEEP_K if sweep_k else (),
                        sweep_memory=DEFAULT_SWEEP_MEMORY if sweep_memory else ())
    result, paths = evaluate_runs(runs, memory, data, config, out)
    typer.echo(format_table(result))
    for name, path in paths.items():
        typer.echo(f"  {name:<13} {path}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the root app."""
    app.command("eval")(eval_command)
