"""The task report in Gopher's layout: category → task → metric, a column per model, chance and Gopher 280B.

``report.md`` (the table), ``report.json`` (the same, nested) and ``report.png`` (RETRO[ON] − RETRO[OFF]
per category: the paper's "where does retrieval help" picture; one bar group per RETRO model, only
when a run has both). Accuracies are shown in percent, bits per byte and perplexity as they are.
A category's retrieval gain is the mean over its tasks of the headline metric's difference, signed
so that positive means retrieval helps (bits per byte: [OFF] − [ON]).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from burrow.artefacts import atomic_path, damaged, write_json
from burrow.errors import BurrowError
from burrow.tasks.catalog import CATEGORIES, TASKS

_RAW = ("bits_per_byte", "perplexity")  # metrics shown as they are, not in percent


def _lower_better(metric: str) -> bool:
    return metric in _RAW


def _fmt(metric: str, value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "—"
    if metric in _RAW:
        return f"{value:.3f}" if metric == "bits_per_byte" else f"{value:.2f}"
    text = f"{100 * value:.1f}"
    return f"{text} ± {100 * stderr:.1f}" if stderr is not None else text


def read_results(out: Path) -> dict[str, Any]:
    """``out/results.json`` of a ``burrow tasks run``, checked against its contract before anything is written."""
    fix = f"re-run `burrow tasks run … -o {out}`: it reuses the finished per-task results and writes results.json again"
    if not out.is_dir():
        raise BurrowError(f"{out} is not a folder; pass the output folder (-o) of a `burrow tasks run`")
    path = out / "results.json"
    with damaged(path, fix):
        results = json.loads(path.read_text(encoding="utf-8"))
    problem = _problem(results)
    if problem is not None:
        raise BurrowError(f"{path} is not a `burrow tasks run` result ({problem}); {fix}")
    return results


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _problem(results: Any) -> str | None:
    """What in ``results`` breaks the results.json contract (:mod:`burrow.tasks.runner`), or None."""
    if not (isinstance(results, dict) and isinstance(results.get("models"), dict)
            and isinstance(results.get("tasks"), dict)):
        return 'expected {"models": {label: {task: metrics}}, "tasks": {task: info}}'
    if not results["tasks"] or not results["models"]:
        return "no tasks or no models"
    for task, info in results["tasks"].items():
        if task not in TASKS:
            return f"unknown task {task!r}"
        metrics = info.get("metrics") if isinstance(info, dict) else None
        if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)
                and info.get("category") in CATEGORIES and _number(info.get("chance"))):
            return f"task {task}: expected category, metrics and chance"
    for label, per_task in results["models"].items():
        if not isinstance(per_task, dict):
            return f"model {label}: expected task -> metrics"
        for task, metrics in per_task.items():
            if not isinstance(metrics, dict) or not all(_number(v) for v in metrics.values()):
                return f"model {label}, task {task}: expected metric -> number"
    return None


def retro_pairs(labels: list[str]) -> list[tuple[str, str, str]]:
    """(name, [OFF] label, [ON] label) of every RETRO model scored both ways."""
    return [(lab[: -len("[ON]")], lab[: -len("[ON]")] + "[OFF]", lab) for lab in labels
            if lab.endswith("[ON]") and lab[: -len("[ON]")] + "[OFF]" in labels]


def retrieval_gains(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """RETRO name -> category -> mean signed headline difference [ON] − [OFF] over the category's tasks."""
    models, out = results["models"], {}
    for name, off, on in retro_pairs(list(models)):
        per: dict[str, list[float]] = {}
        for task, info in results["tasks"].items():
            metric = info["metrics"][0]
            a, b = models[on].get(task, {}).get(metric), models[off].get(task, {}).get(metric)
            if a is None or b is None:
                continue
            per.setdefault(info["category"], []).append((b - a) if _lower_better(metric) else (a - b))
        out[name] = {c: sum(v) / len(v) for c, v in per.items()}
    return out


def report_json(results: dict[str, Any]) -> dict[str, Any]:
    """The nested report: categories → tasks → metrics → per-model value and stderr, chance, Gopher 280B."""
    labels = list(results["models"])
    cats = []
    for category in CATEGORIES:
        tasks = []
        for task, info in results["tasks"].items():
            if info["category"] != category:
                continue
            spec = TASKS[task]
            rows = []
            for i, metric in enumerate(info["metrics"]):
                rows.append({"metric": metric, "higher_is_better": not _lower_better(metric),
                             # acc_norm picks among the same choices as acc: the same chance
                             "chance": info["chance"] if i == 0 or metric == "acc_norm" else None,
                             "gopher_280b": spec.gopher.get(metric),
                             "models": {lab: {"value": results["models"][lab].get(task, {}).get(metric),
                                              "stderr": results["models"][lab].get(task, {}).get(f"{metric}_stderr")}
                                        for lab in labels}})
            n = {lab: results["models"][lab].get(task, {}).get("n") for lab in labels}
            tasks.append({"task": task, "note": spec.note, "n": n, "metrics": rows})
        if tasks:
            cats.append({"category": category, "tasks": tasks})
    return {"labels": labels, "categories": cats, "retrieval_gain": retrieval_gains(results)}


def report_markdown(report: dict[str, Any]) -> str:
    """The table: one row per (category, task, metric); accuracies in %, ± one standard error."""
    labels = report["labels"]
    head = ["category", "task", "metric", "chance", *labels, "Gopher 280B"]
    lines = ["# Task results", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cat in report["categories"]:
        for t in cat["tasks"]:
            for row in t["metrics"]:
                m = row["metric"]
                cells = [cat["category"], t["task"], m, _fmt(m, row["chance"]),
                         *(_fmt(m, row["models"][lab]["value"], row["models"][lab]["stderr"]) for lab in labels),
                         _fmt(m, row["gopher_280b"])]
                lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Documents per task: " + "; ".join(
        f"{t['task']} {next((v for v in t['n'].values() if v), 0)}" for c in report["categories"] for t in c["tasks"])]
    notes = [f"* {t['task']}: {t['note']}" for c in report["categories"] for t in c["tasks"] if t["note"]]
    if notes:
        lines += ["", "Formats:", *notes]
    if report["retrieval_gain"]:
        lines += ["", "## Where retrieval helps: RETRO[ON] − RETRO[OFF] (headline metric, mean over tasks)", "",
                  "| model | " + " | ".join(c["category"] for c in report["categories"]) + " |",
                  "|---|" + "---|" * len(report["categories"])]
        for name, gains in report["retrieval_gain"].items():
            cells = [_gain(gains.get(c["category"])) for c in report["categories"]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Positive: retrieval helps. Every cell is ×100: accuracy in points; bits per byte ([OFF] − [ON]) "
                  "in hundredths of a bit (+5.00 is 0.05 bits per byte)."]
    return "\n".join(lines) + "\n"


def _gain(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f}"


def plot_gains(gains: dict[str, dict[str, float]], path: Path) -> Path | None:
    """Bar chart of RETRO[ON] − RETRO[OFF] per category (None when no RETRO model ran both ways)."""
    if not gains:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [c for c in CATEGORIES if any(c in g for g in gains.values())]
    fig, ax = plt.subplots(figsize=(1.6 * len(cats) + 2, 3.6))
    width = 0.8 / len(gains)
    for j, (name, g) in enumerate(gains.items()):
        xs = [i + j * width for i in range(len(cats))]
        ax.bar(xs, [100 * g.get(c, 0.0) for c in cats], width, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([i + width * (len(gains) - 1) / 2 for i in range(len(cats))], cats, rotation=15)
    ax.set_ylabel("RETRO[ON] − RETRO[OFF] (×100: points; bpb [OFF] − [ON])")
    ax.set_title("Where does retrieval help?")
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.json, report.md and (with a RETRO model scored both ways) report.png into ``out``."""
    report = report_json(results)
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(report_markdown(report), encoding="utf-8")
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    png = plot_gains(report["retrieval_gain"], out / "report.png")
    if png is not None:
        paths["png"] = png
    return paths
