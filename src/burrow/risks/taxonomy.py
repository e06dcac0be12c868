"""Weidinger et al.'s risk taxonomy as data: six areas, 21 risks, each measured, a proxy, or for people.

The taxonomy lives in ``taxonomy.json`` beside this module (areas, risks, burrow's own one-line
descriptions, what stands in for a risk measured by proxy, and why the rest are not automatically
measurable and what a person would have to do). This module only reads and checks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from burrow.errors import BurrowError

STATUSES = ("measured", "proxy", "not automatically measurable", "not measured")


@dataclass(frozen=True)
class Risk:
    """One risk of the taxonomy and how burrow assesses it."""

    number: int  # 1..21, Weidinger et al.'s order
    id: str  # short stable id (``--risks`` takes these or numbers)
    area: str  # area id, I..VI
    area_name: str
    name: str  # the paper's name of the risk
    description: str  # burrow's one-line description
    measure: str | None  # the measurement that assesses it (None: not automatically measurable)
    parts: tuple[str, ...] | None  # which of that measurement's results the row shows (None: all)
    proxy: str | None  # what is measured instead and why (None: measured directly)
    why: str | None  # not automatically measurable: why
    how: str | None  # … and what a person would have to do

    @property
    def planned_status(self) -> str:
        """The status the risk gets when its measurement runs: measured, proxy, or not automatically measurable."""
        if self.measure is None:
            return "not automatically measurable"
        return "proxy" if self.proxy else "measured"


@cache
def _raw() -> dict[str, Any]:
    text = resources.files("burrow.risks").joinpath("taxonomy.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def source() -> str:
    """Where the taxonomy comes from (the paper) and who wrote the descriptions."""
    return str(_raw()["source"])


@cache
def load_taxonomy() -> tuple[Risk, ...]:
    """The 21 risks in the paper's order, checked for completeness."""
    raw = _raw()
    areas = {a["id"]: a["name"] for a in raw["areas"]}
    risks = []
    for r in raw["risks"]:
        manual = r.get("manual") or {}
        if (r.get("measure") is None) == (not manual):
            raise ValueError(f"taxonomy risk {r['id']}: give either a measure or a manual reason")  # a packaging bug
        risks.append(Risk(int(r["number"]), r["id"], r["area"], areas[r["area"]], r["name"], r["description"],
                          r.get("measure"), tuple(r["parts"]) if r.get("parts") else None, r.get("proxy"),
                          manual.get("why"), manual.get("how")))
    if [r.number for r in risks] != list(range(1, len(risks) + 1)):
        raise ValueError("taxonomy risks must be numbered 1..N in order")  # a packaging bug
    return tuple(risks)


def areas() -> list[tuple[str, str]]:
    """(id, name) of the six areas in order."""
    return [(a["id"], a["name"]) for a in _raw()["areas"]]


def is_known(name: str) -> bool:
    """True when ``name`` is a risk's id or number."""
    return any(name in (r.id, str(r.number)) for r in load_taxonomy())


def select(names: list[str] | None) -> list[Risk]:
    """The risks named by id or number (all when ``names`` is empty or None); an unknown one is an error."""
    risks = load_taxonomy()
    if not names:
        return list(risks)
    by_key = {r.id: r for r in risks} | {str(r.number): r for r in risks}
    unknown = [n for n in names if n not in by_key]
    if unknown:
        raise BurrowError(f"unknown risk id {', '.join(map(repr, unknown))}; known ids: "
                          f"{', '.join(r.id for r in risks)} (or numbers 1-{len(risks)})")
    chosen = {by_key[n].number for n in names}
    return [r for r in risks if r.number in chosen]


def measurements(risks: list[Risk]) -> list[str]:
    """The measurements needed for ``risks``, in the taxonomy's order, each once."""
    out: list[str] = []
    for r in risks:
        if r.measure is not None and r.measure not in out:
            out.append(r.measure)
    return out
