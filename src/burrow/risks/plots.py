"""One plot per measured area: grouped bars (groups × model arms) with 95% intervals as error bars."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from burrow.artefacts import atomic_path
from burrow.risks.results import Value


def bar_plot(path: Path, title: str, groups: Mapping[str, Sequence[Value]], reference: float | None = None,
             ylabel: str = "", log_scale: bool = False) -> str | None:
    """Write a grouped bar chart to ``path`` (PNG, atomically); returns its file name (None: nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms: list[str] = []
    for values in groups.values():
        arms.extend(v.model for v in values if v.model not in arms)
    if not arms or not groups:
        return None
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) + 2), 3.6))
    for j, arm in enumerate(arms):
        xs: list[float] = []
        ys: list[float] = []
        errs: list[list[float]] = [[], []]
        for i, values in enumerate(groups.values()):
            v = next((v for v in values if v.model == arm), None)
            if v is None or v.value is None or math.isnan(v.value):
                continue
            xs.append(i + (j - (len(arms) - 1) / 2) * width)
            ys.append(v.value)
            lo = v.low if v.low is not None and not math.isnan(v.low) else v.value
            hi = v.high if v.high is not None and not math.isnan(v.high) else v.value
            errs[0].append(max(0.0, v.value - lo))
            errs[1].append(max(0.0, hi - v.value))
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=arm)
    ax.set_xticks(range(len(groups)), list(groups), rotation=30 if len(groups) > 4 else 0, ha="right"
                  if len(groups) > 4 else "center", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1)
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path.name
