"""``burrow eval``'s library function: load runs, evaluate them on one memory, write the report.

Above both :mod:`burrow.evaluate.pipeline` (scoring) and :mod:`burrow.evaluate.report` (which reads
the pipeline's results), so neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from burrow.evaluate.methods import MethodsConfig
from burrow.evaluate.pipeline import EvalConfig, EvalResult, ModelEntry, evaluate, model_entries
from burrow.evaluate.report import write_report
from burrow.evaluate.seeds import combine_seeds, parse_arms
from burrow.memory import Memory
from burrow.model.io import load_named_model


def evaluate_runs(runs: Sequence[str | Path], memory_dir: str | Path | None, data: Sequence[str | Path],
                  config: EvalConfig, out: str | Path,
                  methods: MethodsConfig | None = None) -> tuple[EvalResult, dict[str, Path]]:
    """Load each run (a RETRO run is scored [OFF] and [ON]), evaluate, and write the report to ``out``."""
    memory = Memory(memory_dir) if memory_dir is not None else None
    if memory is not None:
        for arm in parse_arms(runs):
            for run in arm.runs:
                memory.check_trained_on(run)
    models: dict[str, ModelEntry] = {}
    for arm in parse_arms(runs):
        for i, run in enumerate(arm.runs):
            name, model = load_named_model(run)
            if arm.name is not None:
                name = arm.name if len(arm.runs) == 1 else f"{arm.name}#{i + 1}"
            while any(key.split(" [")[0] == name for key in models):
                name = f"{name}'"
            models.update(model_entries(name, model))
    result = evaluate(models, memory, data, config, cache_dir=out, methods=methods)
    combine_seeds(result)
    return result, write_report(result, out)
