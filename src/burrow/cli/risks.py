"""`burrow risks`: the risk report (Weidinger et al.'s 21 risks) for trained runs and their memory."""

from __future__ import annotations

from pathlib import Path

import typer

from burrow.cli.options import Device, Force, NoProgress, Precision, default_of, out_option
from burrow.risks.config import RisksConfig


def risks_command(
    runs: list[Path] = typer.Argument(None, help="Run or model directories (a RETRO model is run [OFF] and [ON])."),
    memory: Path | None = typer.Option(None, "--memory", "-m", help="The models' memory: tokenizer, RETRO[ON] "
                                                                    "neighbours, training documents."),
    out: Path = out_option(..., "Report directory (risks.md, risks.html, risks.json, plots)."),
    risks: list[str] = typer.Option([], "--risks", help="Risk ids or numbers to report (repeat or comma-separate; "
                                                        "default all 21)."),
    quick: bool = typer.Option(False, "--quick", help="Small subsets of every data set (a few minutes on a CPU)."),
    data_dir: Path = typer.Option(default_of(RisksConfig, "data_dir"), "--data-dir",
                                  help="Folder with crows-pairs/, winogender/, realtoxicityprompts-sample/, …"),
    scorer: str | None = typer.Option(None, "--scorer", help="URL of a Perspective-compatible comments:analyze "
                                                             "endpoint (default: the offline classifier)."),
    tasks_results: Path | None = typer.Option(None, "--tasks-results", help="Reuse a `burrow tasks` results.json "
                                                                            "for TruthfulQA."),
    footprint_dir: list[Path] = typer.Option([], "--footprint-dir", help="More directories whose footprint.json "
                                                                         "to collect (e.g. `burrow eval` outputs)."),
    crows_pairs: int | None = typer.Option(None, "--crows-pairs", help="CrowS-Pairs pairs scored (default all)."),
    toxicity_prompts: int = typer.Option(default_of(RisksConfig, "toxicity_prompts"), "--toxicity-prompts",
                                         help="RealToxicityPrompts prompts (half challenging)."),
    toxicity_samples: int = typer.Option(default_of(RisksConfig, "toxicity_samples"), "--toxicity-samples",
                                         help="Continuations per prompt (n of expected maximum toxicity)."),
    memorisation_docs: int = typer.Option(default_of(RisksConfig, "memorisation_docs"), "--memorisation-docs",
                                          help="Training documents prompted with their prefix."),
    disparity_docs: int = typer.Option(default_of(RisksConfig, "disparity_docs"), "--disparity-docs",
                                       help="Wikipedia leads per topic."),
    tasks_limit: int | None = typer.Option(None, "--tasks-limit", help="TruthfulQA questions per task (default all)."),
    seed: int = typer.Option(default_of(RisksConfig, "seed"), "--seed", help="Seed of every sample."),
    device: Device = default_of(RisksConfig, "device"),
    precision: Precision = default_of(RisksConfig, "precision"),
    no_progress: NoProgress = False,
    force: Force = False,
) -> None:
    """One row per risk of the taxonomy: measured, proxy, or not automatically measurable (with reasons).

    --quick caps every sample size (5×3 toxicity samples, 200 CrowS-Pairs pairs, 12 documents, 8 leads per topic,
    20 TruthfulQA questions) for a run of about three minutes on a laptop CPU."""
    from burrow.artefacts import require_model_path
    from burrow.errors import BurrowError
    from burrow.memory.memory import Memory

    # Bad values and mistyped paths stop here, before torch loads and before a report of "not measured" rows is
    # written.
    selected = tuple(r.strip() for item in risks for r in item.split(",") if r.strip())
    if risks and not selected:
        raise BurrowError("--risks names no risk; give ids or numbers (e.g. --risks toxic-language,18), or leave "
                          "--risks out to report all 21")
    config = RisksConfig(risks=selected, data_dir=data_dir, scorer=scorer, tasks_results=tasks_results,
                         footprint_dirs=tuple(footprint_dir), crows_pairs=crows_pairs,
                         toxicity_prompts=toxicity_prompts, toxicity_samples=toxicity_samples,
                         memorisation_docs=memorisation_docs, disparity_docs=disparity_docs, tasks_limit=tasks_limit,
                         seed=seed, device=device, precision=precision,
                         progress=not no_progress)
    if quick:
        config = config.quick()
    mem = Memory(memory) if memory is not None else None
    for run in runs or []:
        if mem is not None:
            mem.check_trained_on(run)
        else:
            require_model_path(run)
    from burrow.risks import run_risks

    report = run_risks(runs or [], memory, out, config, force=force)
    counts: dict[str, int] = {}
    for row in report.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    typer.echo(f"{len(report.rows)} risks: " + ", ".join(f"{n} {s}" for s, n in counts.items())
               + f" ({report.seconds:.0f} s)")
    if report.timings:  # where the time went; a measurement reused from OUT/parts takes ~0 s
        typer.echo("time: " + ", ".join(f"{name} {sec:.0f} s" for name, sec in report.timings.items()))
    for name, path in report.paths.items():
        typer.echo(f"  {name:<9} {path}")
    for w in report.warnings:
        typer.echo(f"warning: {w}", err=True)
    if report.errors:
        more = f" (and {len(report.errors) - 1} more, listed in the report)" if len(report.errors) > 1 else ""
        raise BurrowError(f"{report.errors[0]}{more}; the other rows were written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``risks`` to the root app."""
    app.command("risks")(risks_command)
