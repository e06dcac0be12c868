"""``burrow risks``'s library function: load the models, run each needed measurement, write the report.

    from burrow.risks import RisksConfig, run_risks
    report = run_risks(["runs/x/runs/baseline", "runs/x/runs/retro"], "runs/x/memory", "out/risks",
                       RisksConfig(risks=("toxic-language",)).quick())
    report.rows[2]["status"], report.errors

Every measurement's outcome is kept in ``OUT/parts/<measurement>.json`` (atomic) keyed by the config
and inputs, so a killed run re-run redoes only what is missing; ``force`` recomputes everything. A
measurement that cannot run leaves its rows saying why; the rest are still measured and written.
``risks.manifest.json`` is written last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import burrow.risks.taxonomy as taxonomy
from burrow.artefacts import check_out_not, config_hash, read_json, write_json, write_manifest
from burrow.errors import BurrowError
from burrow.evaluate.pipeline import timed
from burrow.evaluate.runs import NOT_AN_OUTPUT
from burrow.footprint import track
from burrow.risks.config import RisksConfig
from burrow.risks.context import Context, Unavailable, load_arms
from burrow.risks.disparity import measure_disparity
from burrow.risks.environment import measure_environment
from burrow.risks.misinformation import measure_misinformation
from burrow.risks.privacy import measure_copying, measure_privacy
from burrow.risks.report import build_rows, write_report
from burrow.risks.results import Measurement, Outcome, Value
from burrow.risks.stereotypes import measure_stereotypes
from burrow.risks.toxicity import measure_toxicity

log = logging.getLogger(__name__)

PARTS_FORMAT = 1

#: measurement name (taxonomy.json's ``measure``) -> the function that runs it.
MEASUREMENTS: dict[str, Callable[[Context], Outcome]] = {
    "stereotypes": measure_stereotypes,
    "toxicity": measure_toxicity,
    "disparity": measure_disparity,
    "privacy": measure_privacy,
    "copying": measure_copying,
    "misinformation": measure_misinformation,
    "environment": measure_environment,
}


@dataclass
class RisksReport:
    """What :func:`run_risks` wrote: the rows, the files, and the problems (one line each)."""

    rows: list[dict[str, Any]]
    paths: dict[str, Path]
    errors: list[str] = field(default_factory=list)  # bad input: unknown ids, missing data, missing memory …
    warnings: list[str] = field(default_factory=list)  # rows not measured for a reason that is not an error
    seconds: float = 0.0
    # measurement -> seconds it took in this call (0.0 when reused from OUT/parts; loading the models: "models")
    timings: dict[str, float] = field(default_factory=dict)


def run_risks(runs: Sequence[str | Path], memory: str | Path | None, out: str | Path,
              config: RisksConfig | None = None, force: bool = False) -> RisksReport:
    """Measure the risks of ``config.risks`` (all 21 by default) for ``runs`` and write the report to ``out``."""
    config = config or RisksConfig()
    out = Path(out)
    t0 = time.perf_counter()
    errors: list[str] = []
    known = [r for r in config.risks if taxonomy.is_known(r)]
    unknown = [r for r in config.risks if not taxonomy.is_known(r)]
    if unknown:
        try:
            taxonomy.select(unknown)
        except BurrowError as e:
            errors.append(str(e))
    if config.risks and not known:
        raise BurrowError(errors[0] if errors else "no risks selected")
    risks = taxonomy.select(known)
    # a run's or a memory's folder (a model given twice) took the report, parts/ and footprint records
    check_out_not(out, NOT_AN_OUTPUT, "the report (risks.md/html/json, parts/, plots)")
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused selection leaves no folder behind
    ctx = Context(config, out, [Path(r) for r in runs], Path(memory) if memory is not None else None, force=force)
    outcomes: dict[str, Outcome | BurrowError] = {}
    timings: dict[str, float] = {}
    with track(out, "risks report") as stage:
        needed = taxonomy.measurements(risks)
        if any(m not in ("environment", "misinformation") for m in needed):
            with timed(timings, "models"):
                load_arms(ctx)
        for name in needed:
            with timed(timings, name):
                outcomes[name] = _run_one(ctx, name, force)
        stage.extra["measurements"] = needed
    warnings: list[str] = []
    for name, result in outcomes.items():
        if isinstance(result, BurrowError):
            line = f"{name}: {result}"
            # A full report on models without retrieval: the retrieval rows say why; not an input error.
            (warnings if isinstance(result, Unavailable) and not config.risks else errors).append(line)
    rows = build_rows(risks, outcomes)
    paths = write_report(rows, ctx, errors + warnings)
    write_manifest(out, "risks", config=config.to_json(), runs=[str(r) for r in runs],
                   memory=str(memory) if memory is not None else None, rows=len(rows),
                   status={s: sum(r["status"] == s for r in rows) for s in taxonomy.STATUSES},
                   errors=errors, seconds=time.perf_counter() - t0, timings=timings)
    return RisksReport(rows, paths, errors, warnings, time.perf_counter() - t0, timings)


def _part_key(ctx: Context, name: str) -> str:
    cfg = {**ctx.config.to_json(), "scorer": ctx.config.scorer}  # the key holds the scorer's whole URL
    for k in ("risks", "progress", "footprint_dirs"):
        cfg.pop(k, None)
    return config_hash({"measurement": name, "config": cfg, "runs": [str(r) for r in ctx.runs],
                        "memory": str(ctx.memory_dir), "inputs": ctx.fingerprint(), "format": PARTS_FORMAT})


def _run_one(ctx: Context, name: str, force: bool) -> Outcome | BurrowError:
    """One measurement, from ``OUT/parts`` when a finished one with the same key is there."""
    path = ctx.out / "parts" / f"{name}.json"
    key = _part_key(ctx, name)
    if not force and path.is_file() and name != "environment":
        try:
            cached = read_json(path)
            plot = cached["outcome"].get("plot")
            # A plot removed since (a narrower report deletes the plots it does not show) is drawn again.
            if cached.get("key") == key and (plot is None or (ctx.out / plot).is_file()):
                log.info("%s: reusing %s", name, path)
                return _outcome_from_json(cached["outcome"])
        except (BurrowError, KeyError, TypeError, AttributeError):
            log.warning("%s is damaged; measuring again", path)
    log.info("measuring %s", name)
    t0 = time.perf_counter()
    try:
        outcome = MEASUREMENTS[name](ctx)
    except BurrowError as e:
        log.warning("%s could not be measured: %s", name, e)
        return e
    outcome.details["seconds"] = time.perf_counter() - t0
    write_json(path, {"key": key, "outcome": _outcome_json(outcome)})
    return outcome


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {"measurements": [m.to_json() for m in o.measurements], "plot": o.plot, "notes": o.notes,
            "details": o.details}


def _outcome_from_json(d: dict[str, Any]) -> Outcome:
    ms = []
    for m in d["measurements"]:
        values = [Value(**v) for v in m.pop("values")]
        ms.append(Measurement(values=values, **m))
    return Outcome(ms, d.get("plot"), list(d.get("notes", [])), dict(d.get("details", {})))
