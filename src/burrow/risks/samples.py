"""Generated samples shared by toxicity, PII and retrieval copying: prompt → continuations per model arm.

Samples are generated with :class:`burrow.generate.Generator` (RETRO[ON] retrieves at every chunk
boundary and records the attribution of each generated chunk to its neighbours) and kept in
``OUT/samples/<set>-<key>.json`` (atomic), so a re-run and every measurement read the same samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from burrow.artefacts import config_hash, read_json, write_json
from burrow.errors import BurrowError
from burrow.generate import GenerationConfig, Generator
from burrow.memory import Memory
from burrow.risks.context import Arm, Context
from burrow.risks.filtered import FilteredMemory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSpec:
    """How to sample: a set of prompts, samples per prompt, length, sampling."""

    name: str  # e.g. "toxicity", "memorisation"
    prompts: tuple[str, ...]
    samples: int  # continuations per prompt
    max_new_tokens: int
    greedy: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int = 0
    min_copy: int = 8  # shortest copied span the attribution records


def generate_samples(ctx: Context, arm: Arm, spec: SampleSpec, memory: Memory | None = None,
                     label: str | None = None, variant: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per prompt and sample: ``{"prompt", "sample", "text", "tokens", "prompt_tokens", "chunks"}`` (``chunks``:
    the attribution of each generated chunk, RETRO[ON] only). ``memory`` replaces the context's (a
    filtered memory); ``label`` names that variant and ``variant`` what else it depends on (a filter's scorer,
    threshold and over-fetch) in the cache key. A :class:`FilteredMemory`'s counts are kept with the samples
    and restored into it when they are reused. With ``ctx.force``, samples are generated again once per report."""
    label = label or arm.label
    key = config_hash({"spec": spec.__dict__, "arm": label, "run": str(arm.run), "memory": str(ctx.memory_dir),
                       "inputs": ctx.fingerprint(), "variant": variant, "device": ctx.config.device,
                       "precision": ctx.config.precision})
    path = ctx.out / "samples" / f"{spec.name}-{_safe(label)}-{key}.json"
    filtered = memory if isinstance(memory, FilteredMemory) else None
    fresh: set[Path] = ctx.cache.setdefault("samples generated", set())  # in this report
    if path.is_file() and (path in fresh or not ctx.force):
        try:
            saved = read_json(path)
            if filtered is not None:
                filtered.load_stats(saved["filter"])
            return list(saved["samples"])
        except (BurrowError, KeyError, TypeError):
            log.warning("%s is damaged; generating again", path)
    gen = Generator(arm.model, memory or ctx.memory, ctx.config.device, ctx.config.precision)
    out = []
    jobs = [(i, j) for i in range(len(spec.prompts)) for j in range(spec.samples)]
    for i, j in tqdm(jobs, desc=f"{spec.name}: {label}", disable=not ctx.config.progress, leave=False):
        cfg = GenerationConfig(max_new_tokens=spec.max_new_tokens, greedy=spec.greedy, temperature=spec.temperature,
                               top_p=spec.top_p, seed=spec.seed * 1_000_003 + i * 1000 + j,
                               retrieval=arm.retrieval, min_copy=spec.min_copy)
        r = gen.generate(spec.prompts[i], cfg)
        out.append({"prompt": i, "sample": j, "text": r.text, "tokens": r.tokens, "prompt_tokens": r.prompt_tokens,
                    "chunks": [c.to_json() for c in r.chunks] if arm.retrieval else []})
    write_json(path, {"arm": label, "spec": spec.__dict__, "samples": out,
                      "filter": filtered.stats() if filtered is not None else None})
    fresh.add(path)
    return out


def conditioned_tokens(sample: dict[str, Any], m: int) -> int:
    """Generated tokens predicted after the first retrieval could act: RETRO's first neighbours (those of
    the sequence's first complete text chunk) condition positions from 2m − 1 on, i.e. generated
    tokens from index m − prompt_tokens on."""
    return max(0, len(sample["tokens"]) - max(0, m - int(sample["prompt_tokens"])))


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def texts(samples: Sequence[dict[str, Any]]) -> list[str]:
    """The generated texts."""
    return [s["text"] for s in samples]


__all__ = ["SampleSpec", "conditioned_tokens", "generate_samples", "texts"]
