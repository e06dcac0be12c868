"""`burrow tasks`: Gopher's evaluation suite through lm-evaluation-harness (run, list, configs, report)."""

from __future__ import annotations

from pathlib import Path

import typer

from burrow.cli.options import DEFAULT_K, Device, K, Precision, default_of, out_option
from burrow.tasks.config import LMConfig, TasksConfig

app = typer.Typer(help="Task accuracy (Gopher's suite) of burrow runs and HF LMs, through lm-evaluation-harness.",
                  no_args_is_help=True)

_DATA = typer.Option(None, "--data", help="Data folder laid out like shared/data (default: $BURROW_DATA, then "
                                          "../shared/data).")


@app.command("run")
def run_command(
    models: list[str] = typer.Argument(..., help="Run or model directories (a RETRO model is scored [OFF] and [ON]) "
                                                 "or Hugging Face LMs: smollm2, a local folder, a hub id."),
    tasks: list[str] = typer.Option(..., "--tasks", "-t", help="Tasks, repeated or comma-separated (`all`; see "
                                                               "`burrow tasks list`)."),
    out: Path = out_option(..., "Output folder: results.json, report.md/json/png, per-task "
                                                      "results (a re-run resumes)."),
    memory: Path | None = typer.Option(None, "--memory", "-m", help="Memory: the tokenizer of burrow runs, RETRO[ON]'s "
                                                                    "neighbours, open-book passages."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N documents of each task."),
    data: Path | None = _DATA,
    k: K = DEFAULT_K,
    device: Device = default_of(LMConfig, "device"),
    precision: Precision = default_of(LMConfig, "precision"),
    batch_tokens: int = typer.Option(default_of(LMConfig, "batch_tokens"), "--batch-tokens",
                                     help="Padded tokens per forward batch."),
    max_length: int = typer.Option(default_of(LMConfig, "max_length"), "--max-length",
                                   help="Longest input fed to a model (its own limit when smaller)."),
    passages: int = typer.Option(default_of(TasksConfig, "passages"), "--passages",
                                 help="Memory passages per open-book question."),
) -> None:
    """Score RUN... on --tasks through lm-evaluation-harness; write the report in Gopher's layout."""
    from burrow.tasks.report import report_json, report_markdown
    from burrow.tasks.runner import run_tasks

    config = TasksConfig(lm=LMConfig(k=k, device=device, precision=precision, batch_tokens=batch_tokens,
                                     max_length=max_length), limit=limit, passages=passages)
    results = run_tasks(models, tasks, out, memory=memory, data_dir=data, config=config)
    typer.echo(report_markdown(report_json(results)))
    typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}")


@app.command("list")
def list_command() -> None:
    """The tasks, their category, metrics, chance and Gopher 280B's figure."""
    from burrow.tasks.catalog import TASKS

    for spec in TASKS.values():
        chance = "—" if spec.chance is None else f"{spec.chance:g}"
        gopher = ", ".join(f"{k} {v:g}" for k, v in spec.gopher.items()) or "—"
        memory = " (needs --memory)" if spec.needs_memory else ""
        typer.echo(f"{spec.name:<16} {spec.category:<22} {'/'.join(spec.metrics):<28} chance {chance:<5} "
                   f"Gopher 280B {gopher}{memory}")


@app.command("configs")
def configs_command(
    out: Path = out_option(..., "Folder for the YAML task configs (an lm-eval --include_path)."),
    tasks: list[str] = typer.Option(["all"], "--tasks", "-t", help="Tasks (default all)."),
    memory: Path | None = typer.Option(None, "--memory", "-m", help="Memory for the open-book passages (without "
                                                                    "one, open-book tasks are left out)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Retrieve passages for the first N questions only."),
    data: Path | None = _DATA,
) -> None:
    """Write the offline lm-eval task configs, for lm-eval's own CLI (`python -m burrow.tasks.harness`)."""
    from burrow.data.shared import find_data
    from burrow.tasks.catalog import parse_tasks
    from burrow.tasks.configs import write_configs
    from burrow.tasks.datasets import check_data
    from burrow.tasks.models import open_memory
    from burrow.tasks.openbook import build_passages

    specs = parse_tasks(tasks)
    root = find_data(data, needs=specs[0].files)
    check_data(specs, root)
    found = {}
    if memory is not None:
        mem = open_memory(memory)
        found = {s.name: build_passages(s, root, mem, out / "passages", TasksConfig.passages, limit)
                 for s in specs if s.needs_memory}
    write_configs(specs, root, out, found)
    typer.echo(f"wrote lm-eval task configs to {out} (use --include_path {out})")


@app.command("report")
def report_command(
    out: Path = typer.Argument(..., help="A `burrow tasks run` output folder (its results.json)."),
) -> None:
    """Rewrite report.md/json/png from results.json and print the table."""
    from burrow.tasks.report import read_results, report_json, report_markdown, write_report

    results = read_results(out)
    write_report(results, out)
    typer.echo(report_markdown(report_json(results)))


def register(app_root: typer.Typer) -> None:
    """Add ``tasks`` to the root app."""
    app_root.add_typer(app, name="tasks")
