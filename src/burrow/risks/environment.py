"""Environmental cost (risk 18): energy, CO₂ and FLOPs of the memory build, training and evaluation.

Collected from the ``footprint.json`` files that ``burrow memory build``, ``burrow train``,
``burrow eval`` and ``burrow risks`` write into their output directories (:mod:`burrow.footprint`:
codecarbon offline + counted FLOPs). A run or memory made before footprints were recorded has no
energy figure; its FLOPs are still counted from its manifests (training 6·N·D from
``train.manifest.json`` and the model's parameter count; memory build 2·N_enc·tokens for the frozen
encoder over every chunk) and the row says energy was not recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from burrow.artefacts import read_json
from burrow.errors import BurrowError
from burrow.footprint import read_footprint, safetensors_parameters, totals
from burrow.memory.encode import resolve_model_path
from burrow.risks.context import Context
from burrow.risks.plots import bar_plot
from burrow.risks.results import Measurement, Outcome, Value

log = logging.getLogger(__name__)


def _sources(ctx: Context) -> list[tuple[str, Path]]:
    """(what, directory) of every artefact whose footprint the report collects."""
    out: list[tuple[str, Path]] = []
    if ctx.memory_dir is not None:
        out.append(("memory build", ctx.memory_dir))
    for run in ctx.runs:
        out.append((f"training {run.name}", run))
    out += [(f"evaluation {p.name}", p) for p in ctx.config.footprint_dirs]
    return out


def _counted_flops(what: str, directory: Path) -> tuple[float, str] | None:
    """FLOPs counted from manifests when a directory has no footprint (None: nothing to count from)."""
    if what == "memory build" and (directory / "memory.manifest.json").is_file():
        m = read_json(directory / "memory.manifest.json")
        weights = Path(resolve_model_path(m["encoder_config"]["model"])) / "model.safetensors"
        if not weights.is_file():
            return None
        n_enc, tokens = safetensors_parameters(weights), int(m["n_chunks"]) * int(m["chunk_size"])
        return 2.0 * n_enc * tokens, f"2·N_enc·T, N_enc = {n_enc:,} encoder parameters, T = {tokens:,} chunk tokens"
    if what.startswith("training") and (directory / "train.manifest.json").is_file():
        t = read_json(directory / "train.manifest.json")
        model = directory / str(t.get("model_dir", "final")) / "model.manifest.json"
        if not model.is_file() or t.get("tokens") is None:
            return None
        n, d = int(read_json(model)["parameters"]), int(t["tokens"])
        return 6.0 * n * d, f"6·N·D, N = {n:,} parameters, D = {d:,} tokens trained"
    return None


def measure_environment(ctx: Context) -> Outcome:
    """Energy, emissions and FLOPs per artefact that produced the models."""
    sources = _sources(ctx)
    if not sources:
        raise BurrowError("no run, memory or --footprint-dir to collect a footprint from")
    energy = Measurement("energy", "Energy", "kWh used (codecarbon estimate: CPU + RAM + GPU)", "footprint.json files")
    co2 = Measurement("emissions", "Emissions", "kg CO2-eq (energy × the carbon intensity of the configured "
                      "country)", "footprint.json files")
    flops = Measurement("flops", "Compute", "floating-point operations, counted (formula per entry)",
                        "footprint.json and manifests")
    notes, details = [], {}
    for what, directory in sources:
        try:
            fp = read_footprint(directory)
        except BurrowError as e:
            notes.append(f"{what}: {e}")
            continue
        if fp is not None:
            for stage, t in totals(fp).items():
                label = what if len(totals(fp)) == 1 else f"{what} ({stage})"
                details[label] = t
                if t["calls"] > t["energy_missing"]:
                    energy.values.append(Value(label, t["energy_kwh"], n=t["calls"]))
                    co2.values.append(Value(label, t["emissions_kg"], n=t["calls"]))
                    if t["energy_missing"]:  # counted as 0 in the totals
                        notes.append(f"{label}: {t['energy_missing']} of {t['calls']} calls recorded no energy "
                                     "(tracking off, or too short to measure): its energy and emissions are lower "
                                     "bounds")
                if t["flops"]:
                    flops.values.append(Value(label, t["flops"], n=t["calls"]))
                    notes.append(f"{label}: {t['flops_formula']}")
            continue
        counted = _counted_flops(what, directory)
        if counted is not None:
            flops.values.append(Value(what, counted[0]))
            notes.append(f"{what}: no footprint.json (made before footprints were recorded, or tracking off): "
                         f"energy not recorded; FLOPs counted from its manifests: {counted[1]}")
        else:
            notes.append(f"{what}: {directory} has no footprint.json and no manifest to count FLOPs from")
    measurements = [m for m in (energy, co2, flops) if m.values]
    if not measurements:
        raise BurrowError("no footprint.json or manifests found in " + ", ".join(str(d) for _, d in sources))
    plot = bar_plot(ctx.out / "environment.png", "Compute (FLOPs)", {v.model: [Value("FLOPs", v.value)]
                                                                     for v in flops.values}, log_scale=True) \
        if flops.values else None
    return Outcome(measurements, plot, notes, {"stages": details})
