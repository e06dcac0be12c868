"""Several runs per arm (seeds): one score per arm, the mean over seeds, with an interval.

``burrow eval base=runs/b1,runs/b2 retro=runs/r1,runs/r2`` scores every seed's model (named
``base#1``, ``base#2``, …), then :func:`combine_seeds` replaces each arm's seeds by one score whose
per-chunk bits are the mean over its seeds — so gains stay paired per document (the bootstrap
resamples documents of the seed-averaged bits) — and records each seed's bpb with a Student-t 95%
interval of their mean (``EvalResult.seeds``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from burrow.errors import BurrowError
from burrow.evaluate.bpb import ModelScore
from burrow.evaluate.pipeline import EvalResult

T = TypeVar("T")


@dataclass(frozen=True)
class Arm:
    """Runs of one arm: ``name`` (None: named after its one run) and its seeds' directories."""

    name: str | None
    runs: tuple[Path, ...]


def parse_arms(specs: Sequence[str | Path]) -> list[Arm]:
    """``RUN`` is one run; ``NAME=RUN1,RUN2,…`` an arm of several seeds (distinct runs, a name used once)."""
    arms: list[Arm] = []
    for spec in specs:
        text = str(spec)
        if not text.strip():
            raise BurrowError("a run argument is empty: give a run or model directory, or NAME=RUN1,RUN2,…")
        if "=" in text and not Path(text).exists():
            name, _, runs = text.partition("=")
            entries = runs.split(",")
            if not name or not runs or "#" in name:
                raise BurrowError(f"an arm is NAME=RUN1,RUN2,… (no '#' in NAME), not {text!r}")
            if any(not r.strip() for r in entries):
                raise BurrowError(f"arm {name} has an empty run in {text!r}: separate its runs by single commas")
            paths = tuple(Path(r) for r in entries)
            same = next((p for i, p in enumerate(paths) if p.resolve() in {q.resolve() for q in paths[:i]}), None)
            if same is not None:
                raise BurrowError(f"arm {name} lists {same} twice: each seed is a different run")
            if any(a.name == name for a in arms):
                raise BurrowError(f"arm name {name} is given twice: give each arm its own NAME")
            arms.append(Arm(name, paths))
        else:
            arms.append(Arm(None, (Path(text),)))
    return arms


def seed_interval(bpbs: Sequence[float], level: float = 0.95) -> dict[str, float | list[float]]:
    """Mean of per-seed bpbs with a Student-t interval (none for one seed)."""
    x = np.asarray(bpbs, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return {"bpb": list(map(float, x)), "mean": mean, "low": mean, "high": mean, "seeds": len(x)}
    from scipy import stats  # here, not at import: scipy.stats costs ~0.9 s of every CLI start

    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return {"bpb": list(map(float, x)), "mean": mean, "low": mean - half, "high": mean + half, "seeds": len(x)}


def combine_seeds(result: EvalResult, seeds: Mapping[str, str]) -> None:
    """Replace each seed's scores by one score per arm (mean bits over seeds), in place; ``seeds`` maps a
    seed's model name (``NAME#i``) to its arm ``NAME``, and a score belongs to the seed its name starts with."""
    if not seeds:
        return

    def arm_of(name: str) -> str:
        seed = max((s for s in seeds if name == s or name.startswith(s + " ")), key=len, default=None)
        return name if seed is None else seeds[seed] + name[len(seed):]

    groups: dict[str, list[str]] = {}
    for name in result.scores:
        groups.setdefault(arm_of(name), []).append(name)
    scores: dict[str, ModelScore] = {}
    for key, names in groups.items():
        parts = [result.scores[n] for n in names]
        if names == [key]:
            scores[key] = parts[0]
            continue
        first = parts[0]
        scores[key] = ModelScore(key, first.mode, first.k, np.mean([p.doc_bits for p in parts], axis=0),
                                 np.mean([p.chunk_bits for p in parts], axis=0), first.doc_bytes)
        result.seeds[key] = seed_interval([p.bpb for p in parts])
    result.scores = scores
    result.bases = {arm_of(k): arm_of(v) for k, v in result.bases.items()}
    result.methods = {arm_of(k): v for k, v in result.methods.items()}
    # the sweeps, per arm: the mean over its seeds of each point's bpb (the same bytes: = bpb of the mean bits)
    result.sweep_k = _mean_by_arm(result.sweep_k, arm_of)
    for point in result.sweep_memory:
        point.bpb = {arm: float(np.mean(v)) for arm, v in _group(point.bpb, arm_of).items()}
    if result.leakage is not None:
        result.curves = {n: result.leakage.curve(result.data, s.chunk_bits) for n, s in scores.items()}


def _group(values: Mapping[str, T], arm_of: Callable[[str], str]) -> dict[str, list[T]]:
    """arm -> the values of its seeds' names, in order."""
    out: dict[str, list[T]] = {}
    for name, v in values.items():
        out.setdefault(arm_of(name), []).append(v)
    return out


def _mean_by_arm(sweeps: Mapping[str, Mapping[int, float]], arm_of: Callable[[str], str]
                 ) -> dict[str, dict[int, float]]:
    """name -> k -> bpb, averaged over the seeds of each arm (a k no seed has is left out)."""
    return {arm: {k: float(np.mean([s[k] for s in parts])) for k in parts[0] if all(k in s for s in parts)}
            for arm, parts in _group(sweeps, arm_of).items()}
