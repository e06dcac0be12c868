"""``burrow eval``'s library function: load runs, evaluate them on one memory, write the report.

Above both :mod:`burrow.evaluate.pipeline` (scoring) and :mod:`burrow.evaluate.report` (which reads
the pipeline's results), so neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from burrow.evaluate.pipeline import EvalConfig, EvalResult, ModelEntry, evaluate, model_entries
from burrow.evaluate.report import write_report
from burrow.memory import Memory
from burrow.model.io import load_named_model


def evaluate_runs(runs: Sequence[str | Path], memory_dir: str | Path | None, data: Sequence[str | Path],
                  config: EvalConfig, out: str | Path) -> tuple[EvalResult, dict[str, Path]]:
    """Load each run (a RETRO run is scored [OFF] and [ON]), evaluate, and write the report to ``out``."""
    models: dict[str, ModelEntry] = {}
    for run in runs:
        name, model = load_named_model(run)
        while any(key.split(" [")[0] == name for key in models):
            name = f"{name}'"
        models.update(model_entries(name, model))
    memory = Memory(memory_dir) if memory_dir is not None else None
    result = evaluate(models, memory, data, config, cache_dir=out)
    return result, write_report(result, out)
