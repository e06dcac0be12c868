"""Run the burrow tasks on several models through lm-evaluation-harness; the library's entry point.

    results = run_tasks(["runs/baseline", "runs/retro", "smollm2"], ["arc_easy", "mmlu"], Path("out/tasks"),
                        memory=Path("memory"), limit=100)

Layout of ``out``:

* ``configs/``: the lm-eval task configs (YAML) this run used (an lm-eval ``--include_path``);
* ``passages/``: open-book passages retrieved from the memory;
* ``per_task/<label>/<task>.json``: one model's result on one task, written atomically as soon as
  it is known; a re-run with the same settings reuses it (resume), other settings redo it;
* ``lm_cache/``: lm-eval's request cache, so even a task cut short resumes request by request;
* ``results.json`` (the contract below), ``report.md``/``report.json``/``report.png`` and
  ``tasks.manifest.json``, written last.

``results.json``: ``{"models": {label: {task: {metric: float, metric_stderr: float | None, "n": int}}},
"tasks": {task: {"category": str, "metrics": [str], "chance": float | None}}}``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from tqdm import tqdm

from burrow.artefacts import (
    check_out_not,
    config_hash,
    files_id,
    read_json,
    removing_new_folders,
    write_json,
    write_manifest,
)
from burrow.data.shared import find_data
from burrow.errors import BurrowError
from burrow.evaluate.retrieval import memory_fingerprint
from burrow.evaluate.runs import NOT_AN_OUTPUT
from burrow.memory import Memory
from burrow.model.io import weights_id
from burrow.tasks.catalog import MMLU_SUBJECTS, TaskSpec, lm_eval_names, parse_tasks
from burrow.tasks.config import TasksConfig
from burrow.tasks.configs import VERSION, write_configs
from burrow.tasks.datasets import chance_of, check_data
from burrow.tasks.harness_lm import BurrowEvalLM
from burrow.tasks.models import OpenModel, check_source, is_burrow_dir, open_memory, open_model
from burrow.tasks.openbook import build_passages

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One model in one mode, loaded on first use."""

    source: str
    mode: str
    label: str
    model: OpenModel | None


def _plan(models: list[str], memory: Memory | None) -> list[_Job]:
    """Every (model, mode) to score; burrow models are opened now (errors before any scoring)."""
    jobs: list[_Job] = []
    seen: set[str] = set()
    for source in models:
        check_source(source)
        if is_burrow_dir(source):
            om = open_model(source, memory)
            # a second model of the same name is primed before its mode (retro'[ON]): the report pairs a RETRO
            # model's [ON] with its [OFF] by the label's ending (retro[ON]' had no gain row)
            while any(om.mode_label(mode) in seen for mode in om.modes):
                om.label += "'"
            pairs = [(mode, om.mode_label(mode)) for mode in om.modes]
            model: OpenModel | None = om
        else:  # a Hugging Face LM: loaded when a task needs it (a cached run never loads it)
            pairs = [("baseline", Path(source).name if Path(source).is_dir() else source.removeprefix("hf:"))]
            model = None
        for mode, label in pairs:
            while label in seen:
                label += "'"
            seen.add(label)
            jobs.append(_Job(source, mode, label, model))
    return jobs


def _metric_values(res: dict[str, Any], name: str, metric: str) -> tuple[float, float | None]:
    value = float(res[name][f"{metric},none"])
    se = res[name].get(f"{metric}_stderr,none")
    return value, (float(se) if isinstance(se, int | float) and math.isfinite(se) else None)


def extract(spec: TaskSpec, results: dict[str, Any]) -> dict[str, Any]:
    """``{metric: value, metric_stderr: …, "n": docs}`` of burrow task ``spec`` from lm-eval's output."""
    res, counts = results["results"], results["n-samples"]
    names = lm_eval_names(spec)
    n = sum(int(counts[name]["effective"]) for name in names)
    if spec.name != "mmlu":
        out: dict[str, Any] = {}
        for metric in spec.metrics:
            out[metric], out[f"{metric}_stderr"] = _metric_values(res, names[0], metric)
        return {**out, "n": n}
    per = {s: _metric_values(res, name, "acc") for s, name in zip(MMLU_SUBJECTS, names, strict=True)}
    out = {"n": n}
    groups = {"acc": list(MMLU_SUBJECTS), **{f"acc_{c}": [s for s, g in MMLU_SUBJECTS.items() if g == c]
                                             for c in ("stem", "humanities", "social_sciences", "other")}}
    for metric, subjects in groups.items():  # macro averages over subjects
        out[metric] = sum(per[s][0] for s in subjects) / len(subjects)
        ses = [per[s][1] for s in subjects]
        out[f"{metric}_stderr"] = (math.sqrt(sum(se * se for se in ses if se is not None)) / len(subjects)
                                   if all(se is not None for se in ses) else None)
    out["subjects"] = {s: v for s, (v, _) in per.items()}
    return out


class TaskRun:
    """One ``run_tasks`` call: where things go, what was asked, and the per-task results."""

    def __init__(self, out: Path, specs: list[TaskSpec], data_dir: Path, memory: Memory | None,
                 config: TasksConfig) -> None:
        self.out, self.specs, self.data_dir, self.memory, self.config = out, specs, data_dir, memory, config
        passages = self._passages()
        self.configs = write_configs(specs, data_dir, out / "configs", passages)
        self.passages = {k: str(v) for k, v in passages.items()}
        self._task_manager: Any = None

    def _passages(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for spec in self.specs:
            if not spec.needs_memory:
                continue
            if self.memory is None:
                raise BurrowError(f"{spec.name} puts the memory's passages in the prompt: pass --memory DIR")
            found[spec.name] = build_passages(spec, self.data_dir, self.memory, self.out / "passages",
                                              self.config.passages, self.config.limit)
        return found

    @property
    def task_manager(self) -> Any:
        if self._task_manager is None:
            from lm_eval.tasks import TaskManager

            self._task_manager = TaskManager(include_path=str(self.configs), include_defaults=False)  # ours only: fast
        return self._task_manager

    def key(self, job: _Job, spec: TaskSpec) -> dict[str, Any]:
        """What a cached per-task result must match to be reused: the inputs by content, not only by name (the
        weights that load, the memory's manifests, the size and time of the task's data files)."""
        lm = self.config.lm
        return {"task": spec.name, "version": VERSION, "limit": self.config.limit, "data": str(self.data_dir),
                "data_files": [files_id(self.data_dir / f) for f in spec.files],
                "model": str(Path(job.source).resolve()) if Path(job.source).exists() else job.source,
                "weights": weights_id(job.source),
                "mode": job.mode, "memory": str(self.memory.dir.resolve()) if self.memory is not None else None,
                "memory_id": memory_fingerprint(self.memory) if self.memory is not None else None,
                "k": lm.k if job.mode == "on" else None, "precision": lm.precision, "max_length": lm.max_length,
                "passages": self.config.passages if spec.needs_memory else None}

    def cached(self, job: _Job, spec: TaskSpec) -> dict[str, Any] | None:
        path = self.out / "per_task" / job.label / f"{spec.name}.json"
        if path.is_dir():  # scoring would end in an OSError when its result is written there, minutes later
            raise BurrowError(f"{path} is a folder where this task's result goes; remove it and re-run")
        if not path.exists():
            return None
        try:
            found = read_json(path)
        except BurrowError:
            return None
        return found["metrics"] if isinstance(found, dict) and found.get("key") == self.key(job, spec) else None

    def score(self, job: _Job, lm: BurrowEvalLM, spec: TaskSpec) -> dict[str, Any]:
        """Run ``spec`` on ``lm`` through lm-eval and store the result."""
        import lm_eval
        import lm_eval.evaluator

        key = self.key(job, spec)
        cache = None
        if self.config.lm_cache:
            cache = str(self.out / "lm_cache" / f"{job.label}-{config_hash(key)}")
        t0 = time.perf_counter()
        # lm-eval records the working directory's git commit by running `git describe`, which prints
        # "fatal: not a git repository" outside one; burrow keeps only the metrics, so it asks for none
        with mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", lambda: None, create=True):
            results = lm_eval.simple_evaluate(model=lm, tasks=lm_eval_names(spec), task_manager=self.task_manager,
                                              limit=self.config.limit, use_cache=cache,
                                              bootstrap_iters=self.config.bootstrap_iters, verbosity="ERROR")
        if results is None:  # pragma: no cover - only on non-zero ranks
            raise RuntimeError("lm-eval returned no results")
        metrics = extract(spec, results)
        write_json(self.out / "per_task" / job.label / f"{spec.name}.json",
                   {"key": key, "label": job.label, "task": spec.name, "metrics": metrics,
                    "seconds": time.perf_counter() - t0})
        return metrics


def run_tasks(models: list[str], tasks: list[str], out: Path, memory: Path | None = None,
              data_dir: Path | None = None, limit: int | None = None,
              config: TasksConfig | None = None) -> dict[str, Any]:
    """Score ``models`` (run/model directories or HF names) on ``tasks``; returns the parsed results.json."""
    config = config or TasksConfig()
    if limit is not None:
        config.limit = limit
        config.__post_init__()
    if not models:
        raise BurrowError("no models given; pass RUN directories or HF names (e.g. smollm2)")
    # a memory's or a run's folder took results.json, configs/, lm_cache/ and footprint records among its files
    check_out_not(out, NOT_AN_OUTPUT, "the results (results.json, report.md, configs/, per_task/, lm_cache/)")
    specs = parse_tasks(tasks)
    data = find_data(data_dir, needs=specs[0].files)
    check_data(specs, data)  # a missing or damaged task file fails here, before anything is written
    mem = open_memory(memory) if memory is not None else None
    jobs = _plan(list(models), mem)
    out = Path(out)
    (out / "tasks.manifest.json").unlink(missing_ok=True)  # complete again only when this run finishes
    with removing_new_folders(out), _configs_removed_unless_scored(out):
        return _score_all(TaskRun(out, specs, data, mem, config), jobs, models, memory)


@contextlib.contextmanager
def _configs_removed_unless_scored(out: Path) -> Iterator[None]:
    """Remove a new ``out``'s task configs when the run fails before it stored anything a re-run reuses.

    A model that fails to load (say, a Hugging Face name offline) otherwise left ``out`` holding only
    the task configs it wrote first. Anything else (per-task results, lm-eval's request cache, the
    open-book passages) is kept: a re-run reuses it.
    """
    new = not out.exists()
    try:
        yield
    except BaseException:
        if new and out.is_dir() and {p.name for p in out.iterdir()} <= {"configs"}:
            shutil.rmtree(out / "configs", ignore_errors=True)  # then removing_new_folders: out, its new parents
        raise


def _score_all(run: TaskRun, jobs: list[_Job], models: list[str], memory: Path | None) -> dict[str, Any]:
    from burrow.tasks.report import write_report

    out, specs, data, mem, config = run.out, run.specs, run.data_dir, run.memory, run.config
    scores: dict[str, dict[str, Any]] = {job.label: {} for job in jobs}
    t0 = time.perf_counter()
    pairs = [(job, spec) for job in jobs for spec in specs]
    lms: dict[str, BurrowEvalLM] = {}
    for job, spec in tqdm(pairs, desc="tasks", disable=not config.progress):
        found = run.cached(job, spec)
        if found is None:
            if job.label not in lms:
                if job.model is None:
                    job.model = open_model(job.source, mem)
                lms[job.label] = job.model.lm(job.mode, config.lm)
            found = run.score(job, lms[job.label], spec)
            log.info("%s on %s: %s", job.label, spec.name, _headline(spec, found))
        scores[job.label][spec.name] = {k: v for k, v in found.items() if k != "subjects"}
    results = {"models": scores,
               "tasks": {s.name: {"category": s.category, "metrics": list(s.metrics),
                                  "chance": chance_of(s, data, config.limit)} for s in specs}}
    write_json(out / "results.json", results)
    write_report(results, out)
    write_manifest(out, "tasks", config=asdict(config), models=list(models), labels=[j.label for j in jobs],
                   tasks=[s.name for s in specs], data=str(data), memory=str(memory) if memory else None,
                   passages=run.passages, seconds=time.perf_counter() - t0)
    return results


def _headline(spec: TaskSpec, metrics: dict[str, Any]) -> str:
    return f"{spec.metrics[0]} {metrics[spec.metrics[0]]:.4f} (n={metrics['n']})"
