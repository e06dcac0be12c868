"""Several runs per arm (seeds): one score per arm, the mean over seeds, with an interval.

``burrow eval base=runs/b1,runs/b2 retro=runs/r1,runs/r2`` scores every seed's model (named
``base#1``, ``base#2``, …), then :func:`combine_seeds` replaces each arm's seeds by one score whose
per-chunk bits are the mean over its seeds — so gains stay paired per document (the bootstrap
resamples documents of the seed-averaged bits) — and records each seed's bpb with a Student-t 95%
interval of their mean (``EvalResult.seeds``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from burrow.errors import BurrowError
from burrow.evaluate.bpb import ModelScore
from burrow.evaluate.pipeline import EvalResult

SEED_TAG = re.compile(r"#\d+")


@dataclass(frozen=True)
class Arm:
    """Runs of one arm: ``name`` (None: named after its one run) and its seeds' directories."""

    name: str | None
    runs: tuple[Path, ...]


def parse_arms(specs: Sequence[str | Path]) -> list[Arm]:
    """``RUN`` is one run; ``NAME=RUN1,RUN2,…`` an arm of several seeds."""
    arms = []
    for spec in specs:
        text = str(spec)
        if "=" in text and not Path(text).exists():
            name, _, runs = text.partition("=")
            paths = tuple(Path(r) for r in runs.split(",") if r)
            if not name or not paths or "#" in name:
                raise BurrowError(f"an arm is NAME=RUN1,RUN2,… (no '#' in NAME), not {text!r}")
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


def combine_seeds(result: EvalResult) -> None:
    """Replace ``NAME#i`` scores by one ``NAME`` score per arm (mean bits over seeds), in place."""
    groups: dict[str, list[str]] = {}
    for name in result.scores:
        groups.setdefault(SEED_TAG.sub("", name), []).append(name)
    if all(len(v) == 1 and v[0] == k for k, v in groups.items()):
        return
    scores: dict[str, ModelScore] = {}
    for key, names in groups.items():
        parts = [result.scores[n] for n in names]
        if len(parts) == 1 and names[0] == key:
            scores[key] = parts[0]
            continue
        first = parts[0]
        scores[key] = ModelScore(key, first.mode, first.k, np.mean([p.doc_bits for p in parts], axis=0),
                                 np.mean([p.chunk_bits for p in parts], axis=0), first.doc_bytes)
        result.seeds[key] = seed_interval([p.bpb for p in parts])
    result.scores = scores
    result.bases = {SEED_TAG.sub("", k): SEED_TAG.sub("", v) for k, v in result.bases.items()}
    result.methods = {SEED_TAG.sub("", k): v for k, v in result.methods.items()}
    result.sweep_k = {k: v for k, v in result.sweep_k.items() if not SEED_TAG.search(k)}
    if result.leakage is not None:
        result.curves = {n: result.leakage.curve(result.data, s.chunk_bits) for n, s in scores.items()}
