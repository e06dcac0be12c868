"""`burrow eval`: bits-per-byte of trained models (baseline, RETRO[OFF], RETRO[ON]), leakage and sweeps."""

from __future__ import annotations

from pathlib import Path

import typer


def eval_command(
    runs: list[Path] = typer.Argument(..., help="Run directories or model directories (a RETRO model is "
                                                "scored both [OFF] and [ON])."),
    memory: Path | None = typer.Option(None, "--memory", "-m", help="Memory directory: tokenizer, RETRO[ON] "
                                                                    "neighbours, leakage."),
    data: list[str] = typer.Option(..., "--data", "-d", help="Evaluation files or folders (repeat the option)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (report, plots, cached neighbours)."),
    k: int = typer.Option(2, "--k", "-k", help="Neighbours per chunk for RETRO[ON]."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Window n (stride n/2); default: the models' "
                                                               "max_seq_len."),
    leakage: bool = typer.Option(False, "--leakage", help="r(C) and bpb(α) (RETRO §2.6)."),
    sweep_k: bool = typer.Option(False, "--sweep-k", help="RETRO[ON] bpb at k = 1, 2, 4, 10."),
    sweep_memory: bool = typer.Option(False, "--sweep-memory", help="RETRO[ON] bpb at memory fractions 1/16 … 1."),
    max_docs: int | None = typer.Option(None, "--max-docs", help="Score only the first N documents."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto | bf16 | fp32."),
    batch_tokens: int = typer.Option(8192, "--batch-tokens", help="Tokens per forward batch."),
) -> None:
    """Bits-per-byte of RUN... on whole documents of --data, side by side; leakage and sweeps on request."""
    from burrow.evaluate import DEFAULT_SWEEP_K, DEFAULT_SWEEP_MEMORY, EvalConfig, evaluate_runs, format_table

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
