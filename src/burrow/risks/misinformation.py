"""Misinformation (risk 8): TruthfulQA MC1 and MC2 accuracy from burrow's evaluation suite.

Not re-implemented here: :func:`burrow.tasks.run_tasks` runs the tasks (or ``--tasks-results FILE``
reuses a ``results.json`` it wrote) and this module reads the contract-shaped results:
``{"models": {label: {task: {"acc", "acc_stderr", "n"}}}, "tasks": {task: {"chance", …}}}``.
The interval is acc ± 1.96 · stderr, clipped to [0, 1].
"""

from __future__ import annotations

import logging
from typing import Any

from burrow.artefacts import read_json
from burrow.errors import BurrowError
from burrow.risks.context import Context, Unavailable
from burrow.risks.plots import bar_plot
from burrow.risks.results import Measurement, Outcome, Value
from burrow.risks.stats import Z95

log = logging.getLogger(__name__)

TASKS = ("truthfulqa_mc1", "truthfulqa_mc2")
NAMES = {"truthfulqa_mc1": "TruthfulQA MC1", "truthfulqa_mc2": "TruthfulQA MC2"}
METRIC = "acc"


def tasks_results(ctx: Context) -> Any:
    """The tasks results: from ``--tasks-results`` (as read: :func:`truthfulqa` checks its shape) or by calling
    ``burrow.tasks.run_tasks``."""
    cfg = ctx.config
    if cfg.tasks_results is not None:
        return read_json(cfg.tasks_results)  # not dict(…): a JSON list or string there was a traceback
    if not ctx.runs:
        raise BurrowError("no models to run TruthfulQA on (give RUN… or --tasks-results FILE)")
    try:
        # the evaluation suite (floor 5); optional in a partial install
        from burrow.tasks import LMConfig, TasksConfig, run_tasks
    except ImportError as e:
        raise Unavailable(f"the evaluation suite (burrow.tasks) cannot be imported here ({e}); run `burrow tasks "
                          "run` elsewhere and pass its results.json with --tasks-results FILE") from None
    # the report's --device, --precision and --no-progress (TruthfulQA ran on the default device and autocast)
    config = TasksConfig(lm=LMConfig(device=cfg.device, precision=cfg.precision), progress=cfg.progress)
    return dict(run_tasks(models=[str(r) for r in ctx.runs], tasks=list(TASKS), out=ctx.out / "tasks",
                          memory=ctx.memory_dir, data_dir=cfg.data_dir, limit=cfg.tasks_limit, config=config))


def truthfulqa(results: Any, where: str = "the tasks results") -> list[Measurement]:
    """MC1 and MC2 measurements from contract-shaped results; a one-line error when they hold neither."""
    if not isinstance(results, dict) or not isinstance(results.get("models"), dict):
        raise BurrowError(f"{where} is not a tasks results.json (no \"models\" table)")
    out = []
    for task in TASKS:
        try:
            m = _task_measurement(results, task)
        except (TypeError, ValueError, AttributeError) as e:  # a hand-edited or foreign file: null, a list, text
            raise BurrowError(f"{where} has a malformed {task} entry ({e}); give the results.json that "
                              "`burrow tasks run` wrote") from None
        if m.values:
            out.append(m)
    if not out:
        raise BurrowError(f"{where} holds no {' or '.join(TASKS)} results (metric {METRIC!r})")
    return out


def _task_measurement(results: dict[str, Any], task: str) -> Measurement:
    """``task``'s accuracies of every model in ``results`` (the models without it are left out)."""
    chance = ((results.get("tasks") or {}).get(task) or {}).get("chance")
    m = Measurement(task.replace("_", "-"), NAMES[task], "accuracy (multiple choice, true answers preferred)",
                    f"TruthfulQA {task[-3:].upper()}", reference=f"chance {float(chance):.3f}" if chance is not None
                    else None)
    for label, per_task in results["models"].items():
        r = (per_task or {}).get(task)
        if not r or METRIC not in r:
            continue
        acc, se = float(r[METRIC]), r.get(f"{METRIC}_stderr")
        low, high = ((max(0.0, acc - Z95 * float(se)), min(1.0, acc + Z95 * float(se))) if se is not None
                     else (None, None))
        m.values.append(Value(label, acc, low, high, n=r.get("n")))
        m.data = f"TruthfulQA {task[-3:].upper()}, {r.get('n', '?')} questions"
    return m


def measure_misinformation(ctx: Context) -> Outcome:
    """TruthfulQA MC1/MC2 per model label."""
    where = str(ctx.config.tasks_results) if ctx.config.tasks_results else "burrow.tasks.run_tasks's results"
    ms = truthfulqa(tasks_results(ctx), where)
    plot = bar_plot(ctx.out / "misinformation.png", "TruthfulQA accuracy", {m.name: m.values for m in ms})
    notes = [] if ctx.config.tasks_results is None else [f"results reused from {ctx.config.tasks_results}"]
    return Outcome(ms, plot, notes)
