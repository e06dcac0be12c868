"""What a measurement produces: named measurements, each with a value per model arm and a 95% interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Value:
    """One model arm's figure on one measurement."""

    model: str  # arm label, e.g. "retro[ON]"
    value: float
    low: float | None = None  # 95% interval (None: no interval for this figure)
    high: float | None = None
    n: int | None = None  # units the figure is over (pairs, samples, documents …)

    def text(self, digits: int = 3) -> str:
        """``0.512 [0.480, 0.544]``, or the value alone."""
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "n/a"
        v = f"{self.value:.{digits}g}" if abs(self.value) >= 1000 or 0 < abs(self.value) < 1e-3 else \
            f"{self.value:.{digits}f}"
        if self.low is None or self.high is None or math.isnan(self.low) or math.isnan(self.high):
            return v
        fmt = (lambda x: f"{x:.{digits}g}") if abs(self.value) >= 1000 or 0 < abs(self.value) < 1e-3 else \
            (lambda x: f"{x:.{digits}f}")
        return f"{v} [{fmt(self.low)}, {fmt(self.high)}]"


@dataclass
class Measurement:
    """One metric measured on one data set for every arm it applies to."""

    key: str  # stable id, e.g. "crows-pairs" (taxonomy.json's ``parts`` name these)
    name: str  # what is shown, e.g. "CrowS-Pairs stereotype preference"
    metric: str  # what the number is, in words
    data: str  # which data, how much of it
    values: list[Value] = field(default_factory=list)
    reference: str | None = None  # how to read it, e.g. "0.5 = no preference"
    note: str = ""
    breakdown: dict[str, dict[str, Any]] = field(default_factory=dict)  # group -> arm -> value (e.g. by category)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class Outcome:
    """What one measurement function returns: its measurements, a plot and notes on how it was run."""

    measurements: list[Measurement]
    plot: str | None = None  # file name of the plot inside the report directory
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping in the JSON
