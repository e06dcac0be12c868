"""``burrow eval``'s library function: load runs, evaluate them on one memory, write the report.

Above both :mod:`burrow.evaluate.pipeline` (scoring) and :mod:`burrow.evaluate.report` (which reads
the pipeline's results), so neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from burrow.artefacts import read_json
from burrow.errors import BurrowError
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
                check_trained_tokenizer(run, memory)
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


def check_trained_tokenizer(path: str | Path, memory: Memory) -> None:
    """One-line error when the model at ``path`` (a run, ``RUN/final`` or a checkpoint) was trained with
    another tokenizer than ``memory``'s, as its run's config.json records (a bare model directory has
    no record; then only the vocabulary size can be checked, by the caller)."""
    p = Path(path)
    p = p.parent if p.is_file() else p
    for run in (p, p.parent, p.parent.parent):  # the run dir, RUN/final, RUN/checkpoints/step_N
        try:
            record = read_json(run / "config.json") if (run / "config.json").is_file() else None
        except BurrowError:
            continue  # a damaged record: loading the model reports what is wrong
        if not isinstance(record, dict) or not isinstance(record.get("data"), dict) or "train" not in record:
            continue
        trained, have = record["data"].get("tokenizer"), memory.manifest["tokenizer"]
        if trained is not None and trained != have:
            raise BurrowError(f"{path} was trained with tokenizer {trained} but memory {memory.dir} uses {have}; "
                              "use the memory it was trained with (or build one with that memory's --tokenizer)")
        return
