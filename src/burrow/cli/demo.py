"""`burrow demo`: burrow's main job end to end on embedded defaults and the shared corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from burrow.cli.options import Device, out_option
from burrow.defaults import DEFAULT_DEVICE


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the root app."""
    app.command("demo")(demo)


def demo(
    out: Path | None = out_option(None, "Where the corpus, memory, runs and report go (default runs/demo, "
                                  "runs/demo-quick with --quick)."),
    data: Path | None = typer.Option(None, "--data", help="Folder laid out like shared/data (default: found)."),
    quick: bool = typer.Option(False, "--quick", help="A ≤ 3-minute version on a slice of the data."),
    steps: int | None = typer.Option(None, "--steps", help="Training steps per model."),
    baseline: str | None = typer.Option(None, "--baseline", help="Baseline preset (default tiny)."),
    retro: str | None = typer.Option(None, "--retro", help="RETRO preset (default retro-tiny)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per step."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    split: str = typer.Option("valid", "--split", help="Evaluation split: valid (tuning) or test (once, at the end)."),
    device: Device = DEFAULT_DEVICE,
) -> None:
    """Hygiene → memory → train baseline and RETRO → bits-per-byte, leakage and sweeps → one table."""
    from burrow.demo import DemoConfig, format_summary, run_demo

    given: dict[str, Any] = {name: value for name, value in (("steps", steps), ("baseline", baseline), ("retro", retro),
                                             ("batch_size", batch_size), ("lr", lr)) if value is not None}
    out = out or Path("runs/demo-quick" if quick else "runs/demo")  # the two need different memories and runs
    cfg = DemoConfig(out=out, data=data, quick=quick, eval_split=split, device=device, **given)
    typer.echo(format_summary(run_demo(cfg)))
