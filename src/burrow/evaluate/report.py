"""Evaluation reports: JSON (summary + per document), per-chunk arrays (.npz), a Markdown table, PNG plots.

Files written by :func:`write_report` into the output directory:

    eval.json        models' bpb, gains with 95% intervals, leakage curves, sweeps, per-document bits
    chunks.npz       per target chunk: doc, |C|, bytes, s, r(C) (with leakage), bits of model i (bits_<i>)
    eval.md          the table and the plots, for people
    leakage.png      bpb(α) per model + histogram of r(C)        (with leakage)
    sweep_k.png      RETRO[ON] bpb against k, baselines as lines (with a k sweep)
    sweep_memory.png RETRO[ON] bpb against memory size           (with a memory sweep)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import FORMAT_VERSION, atomic_path, write_json
from burrow.evaluate.pipeline import REPORT_ALPHA, EvalResult, config_dict, docs_in_memory_note

log = logging.getLogger(__name__)


def _num(x: float | None) -> float | None:
    """JSON has no NaN: missing values become null."""
    return None if x is None or not math.isfinite(x) else float(x)


def to_json(result: EvalResult) -> dict[str, Any]:
    """The JSON form of a result (per-chunk arrays go to chunks.npz instead)."""
    d = result.data
    models = {name: {"mode": s.mode, "k": s.k, "bpb": s.bpb, "bits": s.bits, "bytes": int(s.doc_bytes.sum()),
                     "bpb_alpha_0.125": _num(result.bpb(name, REPORT_ALPHA)) if result.leakage else None}
              for name, s in result.scores.items()}
    out: dict[str, Any] = {
        "kind": "evaluation", "format_version": FORMAT_VERSION, "memory": result.memory,
        "data": {"documents": d.n_docs, "tokens": d.n_tokens, "bytes": d.n_bytes, "chunks": len(d.chunk_bytes),
                 "chunk_size": d.chunk_size, "start_token": d.start_id, "fingerprint": d.fingerprint()},
        "seq_len": result.seq_len, "stride": result.seq_len // 2, "seconds": result.seconds,
        "timings": result.timings, "docs_in_memory": result.docs_in_memory,
        "config": config_dict(result.config), "models": models, "gains": result.gains(),
        "methods": {name: {"base": base, **result.methods.get(name, {})} for name, base in result.bases.items()},
        "seeds": result.seeds,
        "sweep_k": {n: {str(k): v for k, v in s.items()} for n, s in result.sweep_k.items()},
        "sweep_k_docs": result.sweep_k_docs,
        "sweep_memory": [{"fraction": p.fraction, "documents": p.docs, "chunks": p.chunks, "tokens": p.tokens,
                          "bpb": p.bpb} for p in result.sweep_memory],
        "documents": {"ids": d.doc_ids, "bytes": d.doc_bytes.tolist(),
                      "bits": {n: s.doc_bits.tolist() for n, s in result.scores.items()}},
    }
    if result.leakage is not None:
        leak = result.leakage
        counts, edges = np.histogram(leak.r, bins=16, range=(0.0, 1.0))
        out["leakage"] = {"alphas": list(leak.alphas), "summary": leak.summary(),
                          "kept_bytes": leak.kept_bytes(d).tolist(),
                          "bpb_alpha": {n: [_num(v) for v in c] for n, c in result.curves.items()},
                          "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}
    return out


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "-"


def format_table(result: EvalResult) -> str:
    """A plain-text table of the models side by side (what ``burrow eval`` prints)."""
    g = result.gains()
    has_leak = result.leakage is not None
    head = f"{'model':<28} {'mode':<8} {'k':>3} {'bpb':>8}" + (f" {'bpb α≤0.125':>12}" if has_leak else "")
    head += f"  {'gain vs ' + (result.reference() or '-'):<30}"
    lines = [head, "-" * len(head)]
    for name, s in result.scores.items():
        row = f"{name:<28} {s.mode:<8} {s.k if s.k else '-':>3} {s.bpb:>8.4f}"
        if has_leak:
            row += f" {_fmt(result.bpb(name, REPORT_ALPHA)):>12}"
        own = g.get(name, {})
        shown = own.get("vs_reference", own)  # RETRO[ON]: against the reference here, its [OFF] in the methods table
        gain = shown.get("alpha=1")
        if gain:
            row += f"  {gain['gain']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}]"
            if shown["reference"] != result.reference():  # a method's row: against its own base
                row += f" vs {shown['reference']}"
        lines.append(row)
    d = result.data
    lines.append(f"{d.n_docs} documents, {d.n_tokens:,} tokens, {d.n_bytes:,} bytes; windows {result.seq_len} "
                 f"stride {result.seq_len // 2}; gains are bpb(reference) − bpb(model) with 95% intervals")
    for name, st in result.seeds.items():
        lines.append(f"{name}: {st['seeds']} seeds, bpb {', '.join(f'{b:.4f}' for b in st['bpb'])}; mean "
                     f"{st['mean']:.4f} [{st['low']:.4f}, {st['high']:.4f}] (95% t-interval over seeds; gains "
                     "use the per-document mean over seeds)")
    if result.bases:
        lines += ["", format_methods(result)]
    return "\n".join(lines)


def _gain_cell(gain: dict[str, float] | None) -> str:
    if not gain:
        return "-"
    return f"{gain['gain']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}] ({100 * gain['relative']:+.1f}%)"


def format_methods(result: EvalResult) -> str:
    """Each way of reading the memory against its own no-retrieval base, at α = 1 and α = 0.125."""
    g = result.gains()
    has_leak = result.leakage is not None
    head = f"{'method':<40} {'base bpb':>9} {'bpb':>8}  {'gain α=1 [95% CI] (relative)':<42}"
    head += f"  {'gain α≤0.125 [95% CI]':<42}" if has_leak else ""
    lines = ["retrieval methods, each against its own base (positive gain: retrieval helps)", head, "-" * len(head)]
    for name, base in result.bases.items():
        row = f"{name:<40} {result.scores[base].bpb:>9.4f} {result.scores[name].bpb:>8.4f}  "
        row += f"{_gain_cell(g.get(name, {}).get('alpha=1')):<42}"
        if has_leak:
            row += f"  {_gain_cell(g.get(name, {}).get(f'alpha={REPORT_ALPHA:g}')):<42}"
        lines.append(row)
    return "\n".join(lines)


def markdown(result: EvalResult, plots: dict[str, Path]) -> str:
    """The Markdown report: table, leakage summary, sweeps and plot links."""
    lines = ["# burrow evaluation", "", "```", format_table(result), "```", ""]
    if result.docs_in_memory:
        lines += [f"**Note:** {docs_in_memory_note(result.docs_in_memory, result.data.n_docs)}.", ""]
    if result.leakage is not None:
        s = result.leakage.summary()
        lines += ["## Leakage (RETRO §2.6)", "",
                  f"Mean r(C) = {s['mean_r']:.3f}; {100 * s['frac_r_gt_0.125']:.1f}% of chunks share a contiguous "
                  f"run of more than 12.5% of their tokens with a neighbour (r(C) > 0.125); "
                  f"{100 * s['frac_r_eq_1']:.1f}% are fully contained (r(C) = 1).", ""]
    if result.sweep_k:
        lines += ["## Neighbours at evaluation", ""]
        if result.sweep_k_docs is not None:
            lines += [f"On the first {result.sweep_k_docs} of {result.data.n_docs} documents (every k scored there).",
                      ""]
        lines += ["| model | " + " | ".join(
            f"k={k}" for k in next(iter(result.sweep_k.values()))) + " |", "|---|" + "---|" * len(
            next(iter(result.sweep_k.values())))]
        lines += [f"| {n} | " + " | ".join(f"{v:.4f}" for v in s.values()) + " |" for n, s in result.sweep_k.items()]
        lines.append("")
    if result.sweep_memory:
        names = list(result.sweep_memory[0].bpb)
        lines += ["## Memory size", "", "| fraction | chunks | tokens | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        lines += [f"| {p.fraction:.4g} | {p.chunks:,} | {p.tokens:,} | " + " | ".join(
            f"{p.bpb[n]:.4f}" for n in names) + " |" for p in result.sweep_memory]
        lines.append("")
    lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _figure().close(fig)
    return path


def plot_leakage(result: EvalResult, path: Path) -> Path:
    """bpb(α) per model (left) and the histogram of r(C) (right)."""
    assert result.leakage is not None
    plt = _figure()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in result.curves.items():
        ax1.plot(result.leakage.alphas, curve, label=name, marker=".")
    ax1.axvline(REPORT_ALPHA, color="grey", ls=":", lw=1)
    ax1.set(xlabel="α (max fraction of a chunk shared with its neighbours)", ylabel="bits per byte",
            title="bpb(α): chunks with r(C) ≤ α")
    ax1.legend()
    ax2.hist(result.leakage.r, bins=32, range=(0, 1), color="tab:grey")
    ax2.set(xlabel="r(C)", ylabel="chunks", title="leakage r(C) of evaluation chunks")
    return _save(fig, path)


def _baseline_lines(ax: Any, result: EvalResult) -> None:
    for name, s in result.scores.items():
        if s.mode != "on":
            ax.axhline(s.bpb, ls="--", lw=1, label=f"{name} ({s.mode})", color="tab:grey" if s.mode == "off" else None)


def plot_sweep_k(result: EvalResult, path: Path) -> Path:
    """RETRO[ON] bpb against neighbours at evaluation, baselines as horizontal lines."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in result.sweep_k.items():
        ax.plot(list(points), list(points.values()), marker="o", label=name)
    title = "bpb against k"
    if result.sweep_k_docs is None:
        _baseline_lines(ax, result)
    else:  # the baselines were scored on every document: not comparable, not drawn
        title += f" (first {result.sweep_k_docs} of {result.data.n_docs} documents)"
    ax.set(xscale="log", xlabel="neighbours k at evaluation", ylabel="bits per byte", title=title)
    ax.set_xticks(result.config.sweep_k, [str(k) for k in result.config.sweep_k])
    ax.legend()
    return _save(fig, path)


def plot_sweep_memory(result: EvalResult, path: Path) -> Path:
    """RETRO[ON] bpb against memory size (tokens kept), baselines as horizontal lines."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    tokens = [p.tokens for p in result.sweep_memory]
    for name in result.sweep_memory[0].bpb:
        ax.plot(tokens, [p.bpb[name] for p in result.sweep_memory], marker="o", label=name)
    _baseline_lines(ax, result)
    ax.set(xscale="log", xlabel="memory tokens (document subsets)", ylabel="bits per byte",
           title="bpb against memory size")
    ax.legend()
    return _save(fig, path)


def save_chunks(result: EvalResult, path: Path) -> Path:
    """Per-chunk arrays: ``doc``, ``length`` |C|, ``bytes``, leakage ``s`` and ``r`` (with leakage), and each
    model's bits under ``bits_<i>`` for the i-th name of ``model_names``."""
    d = result.data
    arrays: dict[str, np.ndarray] = {"doc": d.chunk_doc, "length": d.chunk_len, "bytes": d.chunk_bytes}
    if result.leakage is not None:
        arrays["s"], arrays["r"] = result.leakage.s, result.leakage.r
    names = list(result.scores)
    arrays["model_names"] = np.array(names)
    for i, name in enumerate(names):
        arrays[f"bits_{i}"] = result.scores[name].chunk_bits
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


#: The report's plots by name; a re-run into the same folder removes those it no longer draws.
PLOTS = {"leakage": "leakage.png", "sweep_k": "sweep_k.png", "sweep_memory": "sweep_memory.png"}


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write JSON, per-chunk arrays, plots and Markdown into ``out_dir``; returns name -> path. Plots of an
    earlier report there that this one does not draw are removed (nothing else is)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = (out / "eval.json").is_file()
    plots: dict[str, Path] = {}
    if result.leakage is not None:
        plots["leakage"] = plot_leakage(result, out / PLOTS["leakage"])
    if result.sweep_k:
        plots["sweep_k"] = plot_sweep_k(result, out / PLOTS["sweep_k"])
    if result.sweep_memory:
        plots["sweep_memory"] = plot_sweep_memory(result, out / PLOTS["sweep_memory"])
    paths = {"json": out / "eval.json", "chunks": save_chunks(result, out / "chunks.npz"), "markdown": out / "eval.md"}
    write_json(paths["json"], to_json(result))
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown(result, plots), encoding="utf-8")
    if earlier:  # an earlier report's plots that this one does not reference would read as its own
        for name, file in PLOTS.items():
            if name not in plots:
                (out / file).unlink(missing_ok=True)
    log.info("evaluation report written to %s", out)
    return {**paths, **plots}
