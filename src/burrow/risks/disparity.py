"""Performance disparity (risk 4): bits-per-byte by topic on Wikipedia lead sections, with intervals.

A seeded sample of ``disparity_docs`` leads per topic (the "Uncategorized" bucket left out) is
scored by :func:`burrow.evaluate.evaluate` — the code ``burrow eval`` uses — for every arm; bpb per
topic is Σ bits / Σ bytes over its documents with a bootstrap interval over documents, and the gap
is the worst topic's bpb minus the best's, with an interval from resampling documents within each
topic, read against the gap of the same documents with their topics shuffled (a permutation null:
max − min of noisy topics is above 0, and its interval excludes 0, even when the topics are alike).
Leads that are also memory (training) documents are counted and reported: on them RETRO[ON]
can retrieve the document itself.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from burrow.evaluate import EvalConfig, evaluate, from_texts
from burrow.risks.context import Context
from burrow.risks.plots import bar_plot
from burrow.risks.results import Measurement, Outcome, Value
from burrow.risks.stats import ratio_bootstrap
from burrow.risks.stereotypes import data_file, no_rows, reading, text_field

log = logging.getLogger(__name__)

LEADS_FILE = "wikipedia-vital-summaries/summaries_en.jsonl.gz"
SKIP_TOPICS = ("Uncategorized",)


def read_leads(data_dir: Path, per_topic: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(topic, title, text) for a seeded sample of ``per_topic`` leads of each topic."""
    by_topic: dict[str, list[tuple[str, str]]] = defaultdict(list)
    path = data_file(data_dir, LEADS_FILE)
    with reading(path) as at, gzip.open(path, "rt", encoding="utf-8") as f:
        for n_line, line in enumerate(f, 1):
            at.where = f", line {n_line}"
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("extract", "").strip() and r.get("topic") not in SKIP_TOPICS:
                by_topic[text_field(r, "topic")].append((text_field(r, "title"), text_field(r, "extract")))
    if not by_topic:
        raise no_rows(path)
    rng = np.random.default_rng(seed)
    out = []
    for topic in sorted(by_topic):
        docs = by_topic[topic]
        for i in np.sort(rng.choice(len(docs), size=min(per_topic, len(docs)), replace=False)):
            out.append((topic, *docs[i]))
    return out


def topic_gap(bits: np.ndarray, nbytes: np.ndarray, topics: np.ndarray, samples: int = 1000,
              seed: int = 0) -> tuple[dict[str, Value], Value]:
    """(topic -> bpb with interval, worst − best bpb with interval), resampling documents within topics."""
    names = sorted(set(topics.tolist()))
    per = {t: Value(t, *ratio_bootstrap(bits[topics == t], nbytes[topics == t], samples, seed),
                    n=int((topics == t).sum())) for t in names}
    rng = np.random.default_rng(seed)
    draws = np.zeros((samples, len(names)))
    for j, t in enumerate(names):
        b, n = bits[topics == t], nbytes[topics == t]
        idx = rng.integers(0, len(b), size=(samples, len(b)))
        draws[:, j] = b[idx].sum(1) / np.maximum(n[idx].sum(1), 1e-12)
    point = np.array([per[t].value for t in names])
    gaps = draws.max(1) - draws.min(1)
    lo, hi = np.quantile(gaps, [0.025, 0.975])
    gap = Value("", float(point.max() - point.min()), float(lo), float(hi), n=len(names))
    return per, gap


def shuffled_gap(bits: np.ndarray, nbytes: np.ndarray, topics: np.ndarray, samples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """(median gap, p) of the worst − best bpb when the topic labels are shuffled across the documents (group
    sizes kept): the gap noise alone makes, and the permutation p-value of the observed gap against it.

    The worst − best gap of noisy topics is above 0 even when every topic is alike, and its bootstrap
    interval then excludes 0 too; this null is what the observed gap is read against."""
    names = sorted(set(topics.tolist()))
    codes = np.searchsorted(names, topics)

    def gap(labels: np.ndarray) -> float:
        b = np.bincount(labels, weights=bits, minlength=len(names))
        n = np.bincount(labels, weights=nbytes, minlength=len(names))
        rate = b / np.maximum(n, 1e-12)
        return float(rate.max() - rate.min())

    observed = gap(codes)
    rng = np.random.default_rng(seed)
    null = np.array([gap(rng.permutation(codes)) for _ in range(samples)])
    return float(np.median(null)), float((1 + (null >= observed - 1e-12).sum()) / (1 + samples))


def measure_disparity(ctx: Context) -> Outcome:
    """bpb by topic and the best–worst gap, per arm."""
    cfg = ctx.config
    memory = ctx.memory
    leads = read_leads(cfg.data_dir, cfg.disparity_docs, cfg.seed)
    data = from_texts([f"{t}#{i}" for i, (t, _, _) in enumerate(leads)], [x for _, _, x in leads], memory.tokenizer,
                      memory.chunk_size)
    topics = np.array([d.rsplit("#", 1)[0] for d in data.doc_ids])
    models = {a.label: (a.model, a.mode) for a in ctx.model_arms()}
    result = evaluate(models, memory, data, EvalConfig(device=cfg.device, precision=cfg.precision),
                      cache_dir=ctx.out / "disparity")
    gap = Measurement("topic-gap", "Bits-per-byte gap between topics",
                      "bpb of the worst topic minus bpb of the best",
                      f"Wikipedia vital-article leads, {cfg.disparity_docs} per topic × {len(set(topics))} topics",
                      reference="read against the gap of shuffled topics (notes): noisy topics that are alike "
                                "still differ; larger = more disparity")
    bpb = Measurement("topic-bpb", "Bits-per-byte by topic", "Σ bits / Σ UTF-8 bytes over the topic's leads",
                      gap.data, reference="lower is better")
    null: dict[str, dict[str, float]] = {}
    for label in models:
        score = result.scores[label]
        per, g = topic_gap(score.doc_bits, data.doc_bytes.astype(np.float64), topics, cfg.bootstrap, cfg.seed)
        median, p = shuffled_gap(score.doc_bits, data.doc_bytes.astype(np.float64), topics, cfg.bootstrap, cfg.seed)
        null[label] = {"median_gap": median, "p": p}
        g.model = label
        gap.values.append(g)
        overall = ratio_bootstrap(score.doc_bits, data.doc_bytes.astype(np.float64), cfg.bootstrap, cfg.seed)
        bpb.values.append(Value(label, *overall, n=data.n_docs))
        for t, v in per.items():
            gap.breakdown.setdefault(t, {})[label] = vars(Value(label, v.value, v.low, v.high, v.n))
    bpb.breakdown = gap.breakdown
    titles = {d.title for d in memory.store.docs if d.title}
    inside = sum(title in titles for _, title, _ in leads)
    plot = bar_plot(ctx.out / "disparity.png", "Bits-per-byte by topic (Wikipedia leads)",
                    {t: [Value(**v) for v in per_arm.values()] for t, per_arm in gap.breakdown.items()},
                    ylabel="bits per byte")
    notes = [f"{g.model}: gap {g.value:.3f}; with the topics shuffled across the same leads the gap is "
             f"{null[g.model]['median_gap']:.3f} (median of {cfg.bootstrap}), permutation p = {null[g.model]['p']:.3f}"
             f"{' (a gap noise alone makes)' if null[g.model]['p'] > 0.05 else ''}." for g in gap.values]
    notes.append(f"{inside} of {len(leads)} leads sampled are also memory documents (by title), i.e. in the training "
                 "set of models trained on this memory: their bpb is a training-set figure, and RETRO[ON] may "
                 "retrieve the lead itself.")
    return Outcome([gap, bpb], plot, notes, {"leads_in_memory": inside, "leads": len(leads), "shuffled_topics": null})
