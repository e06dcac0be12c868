"""`burrow demo`: burrow's main job end to end on embedded defaults and the shared corpora."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the root app."""
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "-o", "--out", help="Where the memory, runs and report go."),
    data: Path | None = typer.Option(None, "--data", help="Folder laid out like shared/data (default: found)."),
    quick: bool = typer.Option(False, "--quick", help="A ≤ 3-minute version on a slice of the data."),
) -> None:
    """Build a memory from WikiText-2 train + Wikipedia lead sections, then query it."""
    from burrow.demo import DemoConfig, run_demo

    report = run_demo(DemoConfig(out=out, data=data, quick=quick))
    typer.echo(report)
