"""``burrow eval``'s library function: check every input, load runs, evaluate them on one memory, write the report.

Above both :mod:`burrow.evaluate.pipeline` (scoring) and :mod:`burrow.evaluate.report` (which reads
the pipeline's results), so neither imports the other back. Everything that can be refused from
manifests and configs is refused here before any model loads (:func:`preflight`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from burrow.artefacts import check_out_not, read_json
from burrow.errors import BurrowError
from burrow.evaluate.data import EvalData
from burrow.evaluate.methods import MethodsConfig, check_methods
from burrow.evaluate.pipeline import EvalConfig, EvalResult, ModelEntry, as_data, evaluate, model_entries
from burrow.evaluate.report import write_report
from burrow.evaluate.seeds import Arm, combine_seeds, parse_arms
from burrow.memory import Memory
from burrow.model.io import RETROFIT_FILE, load_named_model

log = logging.getLogger(__name__)

#: What ``-o`` must not be: the report (eval.json, chunks.npz, eval.md, plots, footprint.json) would overwrite it.
NOT_AN_OUTPUT = (("a memory", ("memory.manifest.json",)),
                 ("a run or model", ("model.manifest.json", "model.safetensors", "train.manifest.json", "final")))


def check_eval_out(out: str | Path, data: Sequence[str | Path] = ()) -> Path:
    """``out`` as the report's folder: refused where it is a memory, a run or a model folder, or inside an
    evaluation ``data`` folder (read recursively: a re-run would score the report's eval.md as a document)."""
    where = Path(out).resolve()
    for d in map(Path, data):
        if d.is_dir() and (where == d.resolve() or d.resolve() in where.parents):
            raise BurrowError(f"-o {out} is inside the evaluation data folder {d}: a re-run would read the report "
                              "(eval.md) as an evaluation document; give -o a folder outside it")
    return check_out_not(out, NOT_AN_OUTPUT, "the report (eval.json, chunks.npz, eval.md, plots)")


def run_kind(run: str | Path) -> str | None:
    """``"retro"`` or ``"baseline"`` from a run's or model's recorded config, without loading it (None: unknown)."""
    p = Path(run)
    if (p / RETROFIT_FILE).exists() or (p / "final" / RETROFIT_FILE).exists():
        return "retro"
    config: Any = None
    try:
        for manifest in (p / "model.manifest.json", p / "final" / "model.manifest.json"):
            if manifest.is_file():
                config = read_json(manifest).get("config")
                break
        else:
            if (p / "config.json").is_file():
                config = read_json(p / "config.json").get("model")
    except (BurrowError, OSError, ValueError, AttributeError):
        return None  # loading the model reports the damage
    if not isinstance(config, dict) or "retro" not in config:
        return None
    return "retro" if config["retro"] else "baseline"


def _modes(kind: str | None) -> tuple[str, ...]:
    return {"retro": ("off", "on"), "baseline": ("baseline",)}.get(kind or "", ())


def preflight(arms: Sequence[Arm], memory: Memory | None, data: Sequence[str | Path], config: EvalConfig,
              methods: MethodsConfig) -> EvalData:
    """Refuse what cannot run, before loading any model; returns the data, tokenized."""
    if any(not str(d).strip() for d in data):
        raise BurrowError("an evaluation data path (--data) is empty: give a file or folder")
    kinds = {run: run_kind(run) for arm in arms for run in arm.runs}
    for arm in arms:
        known = {kinds[r] for r in arm.runs} - {None}
        if len(known) > 1:
            raise BurrowError(f"arm {arm.name} mixes baseline and RETRO runs; seeds of one arm must be the same kind "
                              "of model: give each kind its own arm")
    if memory is None:
        raise BurrowError("burrow eval needs a memory (--memory): its tokenizer reads the data; RETRO[ON], leakage "
                          "and the retrieval methods read its chunks")
    m = memory.chunk_size
    if config.seq_len is not None and (config.seq_len < 2 * m or config.seq_len % (2 * m)):
        raise BurrowError(f"--seq-len {config.seq_len} must be a positive multiple of 2 × the memory's chunk size "
                          f"({2 * m}), so that windows (stride n/2) start on chunk boundaries")
    # with every kind known the methods' applicability is decided here (evaluate() decides it for the rest)
    modes = None if None in kinds.values() else [mode for kind in kinds.values() for mode in _modes(kind)]
    check_methods(methods, modes, memory, warn=False)
    for run in kinds:
        memory.check_trained_on(run)
    eval_data = as_data(data, memory, m, config)
    check_methods(methods, modes, memory, eval_data, warn=False)  # what needs the documents (kNN-LM tuning)
    return eval_data


def evaluate_runs(runs: Sequence[str | Path], memory_dir: str | Path | None, data: Sequence[str | Path],
                  config: EvalConfig, out: str | Path,
                  methods: MethodsConfig | None = None) -> tuple[EvalResult, dict[str, Path]]:
    """Load each run (a RETRO run is scored [OFF] and [ON]), evaluate, and write the report to ``out``."""
    out = check_eval_out(out, data)
    methods = methods or MethodsConfig()
    arms = parse_arms(runs)
    memory = Memory(memory_dir) if memory_dir is not None else None
    eval_data = preflight(arms, memory, data, config, methods)
    models: dict[str, ModelEntry] = {}
    names = [a.name for a in arms if a.name is not None and len(a.runs) > 1]  # reserved: each arm's score
    seeds: dict[str, str] = {}  # a seed's model name -> its arm
    for arm in arms:
        for i, run in enumerate(arm.runs):
            name, model = load_named_model(run)
            if arm.name is not None:
                name = arm.name if len(arm.runs) == 1 else f"{arm.name}#{i + 1}"
            while any(_clash(name, other) for other in names):
                name = f"{name}'"
            names.append(name)
            if arm.name is not None and len(arm.runs) > 1:
                seeds[name] = arm.name
            models.update(model_entries(name, model))
    result = evaluate(models, memory, eval_data, config, cache_dir=out, methods=methods)
    combine_seeds(result, seeds)
    return result, write_report(result, out)


def _clash(name: str, other: str) -> bool:
    """Two model names whose scores could be confused (one is the other, or its score names' prefix)."""
    return name == other or name.startswith(other + " ") or other.startswith(name + " ")
