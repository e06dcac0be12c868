"""The risk report: one row per risk of the taxonomy, never blank, as JSON, Markdown and HTML.

A row is **measured** (metric, value per model with its 95% interval, data), **proxy** (the same,
plus what is measured instead and why), **not automatically measurable** (why, and what a person
would have to do) or **not measured** (its measurement could not run here: why). The Markdown and
HTML open with a one-screen summary: the status counts and one line per risk.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import burrow.risks.taxonomy as taxonomy
from burrow.artefacts import atomic_path, write_json
from burrow.errors import BurrowError
from burrow.footprint import read_footprint
from burrow.risks.context import Context
from burrow.risks.results import Measurement, Outcome, Value

REPORT_FORMAT = 1


def build_rows(risks: list[taxonomy.Risk], outcomes: dict[str, Outcome | BurrowError]) -> list[dict[str, Any]]:
    """One JSON-ready row per risk in ``risks``, from the outcomes of their measurements."""
    rows = []
    for r in risks:
        row: dict[str, Any] = {"number": r.number, "id": r.id, "area": r.area, "area_name": r.area_name,
                               "name": r.name, "description": r.description, "status": r.planned_status,
                               "measurements": [], "proxy": r.proxy, "why": r.why, "how": r.how, "plot": None,
                               "notes": []}
        result = outcomes.get(r.measure) if r.measure else None
        if r.measure and result is None:
            row["status"] = "not measured"
            row["why"] = f"its measurement ({r.measure}) was not run"
            row["how"] = f"run `burrow risks … --risks {r.id}`"
        elif isinstance(result, BurrowError):
            row["status"] = "not measured"
            row["why"] = str(result)
            row["how"] = "fix the input named above and re-run; the other rows are unaffected"
        elif isinstance(result, Outcome):
            ms = [m for m in result.measurements if r.parts is None or m.key in r.parts]
            row["measurements"] = [m.to_json() for m in ms]
            row["plot"] = result.plot
            row["notes"] = list(result.notes)
            if not ms:
                row["status"] = "not measured"
                row["why"] = "its measurement produced no figures"
        rows.append(row)
    return rows


def headline(row: dict[str, Any]) -> str:
    """The row's figures in one line: first measurement, value per arm (or the reason it has none)."""
    if row["status"] == "not automatically measurable":
        return _first_sentence(row["why"] or "")
    if row["status"] == "not measured":
        return f"not measured: {row['why']}"
    m = row["measurements"][0]
    vals = ", ".join(f"{v['model']} {Value(**v).text(3)}" for v in m["values"])
    return f"{m['name']}: {vals}"


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")


def write_report(rows: list[dict[str, Any]], ctx: Context, problems: list[str]) -> dict[str, Path]:
    """Write ``risks.json``, ``risks.md`` and ``risks.html`` into ``ctx.out``; returns their paths."""
    out = ctx.out
    own = read_footprint(out)
    doc = {"kind": "risks-report", "format_version": REPORT_FORMAT,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "taxonomy": taxonomy.source(),
           "runs": [str(r) for r in ctx.runs], "models": ctx.labels(),
           "memory": str(ctx.memory_dir) if ctx.memory_dir else None,
           "config": ctx.config.to_json(),
           "summary": _counts(rows), "problems": problems, "rows": rows,
           "footprint_of_this_report": own["calls"][-1] if own and own.get("calls") else None}
    paths = {"json": out / "risks.json", "markdown": out / "risks.md", "html": out / "risks.html"}
    _remove_unshown_plots(out, rows)
    write_json(paths["json"], doc)
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown(doc), encoding="utf-8")
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(to_html(doc), encoding="utf-8")
    return paths


def _remove_unshown_plots(out: Path, rows: list[dict[str, Any]]) -> None:
    """Delete the plots an earlier report left in ``out`` that these rows do not show: only the report's own
    ``<measurement>.png`` names, so a re-run with a narrower ``--risks`` leaves no orphan beside its report."""
    shown = {r["plot"] for r in rows}
    for name in taxonomy.measurements(list(taxonomy.load_taxonomy())):
        if f"{name}.png" not in shown:
            (out / f"{name}.png").unlink(missing_ok=True)


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(r["status"] == s for r in rows) for s in taxonomy.STATUSES}


def markdown(doc: dict[str, Any]) -> str:
    """The report as Markdown: summary first, then one section per area and risk."""
    rows = doc["rows"]
    counts = ", ".join(f"{n} {s}" for s, n in doc["summary"].items() if n)
    lines = ["# Risk report (Weidinger et al. taxonomy)", "",
             f"Models: {', '.join(doc['models']) or 'none loaded'} · memory: {doc['memory'] or 'none'} · "
             f"{len(rows)} risks: {counts}.", ""]
    if doc["problems"]:
        lines += ["Problems:", *[f"- {p}" for p in doc["problems"]], ""]
    lines += ["| # | risk | status | result |", "|---:|---|---|---|"]
    lines += [f"| {r['number']} | {r['name']} | {r['status']} | {_cell(headline(r))} |" for r in rows]
    lines += ["", f"Taxonomy: {doc['taxonomy']}", ""]
    area = None
    for r in rows:
        if r["area"] != area:
            area = r["area"]
            lines += [f"## {area}. {r['area_name']}", ""]
        lines += _row_markdown(r)
    own = doc.get("footprint_of_this_report")
    if own:
        lines += ["## This report", "", f"{own['seconds']:.0f} s; energy "
                  f"{_num(own.get('energy_kwh'), 'kWh')}, emissions {_num(own.get('emissions_kg'), 'kg CO2-eq')} "
                  f"({own.get('tracker') or own.get('energy_error')}).", ""]
    return "\n".join(lines) + "\n"


def _row_markdown(r: dict[str, Any]) -> list[str]:
    lines = [f"### {r['number']}. {r['name']} — {r['status']}", "", f"*{r['description']}* (id `{r['id']}`)", ""]
    if r["status"] == "proxy" and r["proxy"]:
        lines += [f"**Proxy.** {r['proxy']}", ""]
    if r["status"] in ("not automatically measurable", "not measured"):
        lines += [f"**Why.** {r['why']}", "", f"**What a person would have to do.** {r['how']}", ""]
    for m in r["measurements"]:
        lines += _measurement_markdown(m)
    for n in r["notes"]:
        lines += [f"Note: {n}", ""]
    if r["plot"]:
        lines += [f"![{r['id']}]({r['plot']})", ""]
    return lines


def _measurement_markdown(m: dict[str, Any]) -> list[str]:
    lines = [f"**{m['name']}** — {m['metric']}. Data: {m['data']}."
             + (f" Reading: {m['reference']}." if m.get("reference") else ""), "",
             "| model | value [95% interval] | n |", "|---|---|---:|"]
    for v in m["values"]:
        lines.append(f"| {v['model']} | {Value(**v).text(4)} | {v['n'] if v['n'] is not None else ''} |")
    lines.append("")
    if m.get("breakdown"):
        arms = [v["model"] for v in m["values"]]
        lines += ["| group | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for group, per in m["breakdown"].items():
            cells = [Value(**per[a]).text(3) if a in per else "" for a in arms]
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
        lines.append("")
    if m.get("note"):
        lines += [m["note"], ""]
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(x: float | None, unit: str) -> str:
    return "n/a" if x is None else f"{x:.3g} {unit}"


def to_html(doc: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (plots linked beside it)."""
    e = html.escape
    rows = doc["rows"]
    colour = {"measured": "#d9f2d9", "proxy": "#fff2cc", "not automatically measurable": "#eeeeee",
              "not measured": "#f8d7da"}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>burrow risk report</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}"
             "img{max-width:100%}</style></head><body>",
             "<h1>Risk report (Weidinger et al. taxonomy)</h1>",
             f"<p>Models: {e(', '.join(doc['models']) or 'none loaded')} · memory: {e(str(doc['memory']))} · "
             + ", ".join(f"{n} {e(s)}" for s, n in doc["summary"].items() if n) + "</p>"]
    if doc["problems"]:
        parts.append("<p><b>Problems:</b></p><ul>" + "".join(f"<li>{e(p)}</li>" for p in doc["problems"]) + "</ul>")
    parts.append("<table><tr><th>#</th><th>risk</th><th>status</th><th>result</th></tr>")
    for r in rows:
        parts.append(f"<tr style='background:{colour[r['status']]}'><td>{r['number']}</td>"
                     f"<td><a href='#{e(r['id'])}'>{e(r['name'])}</a></td><td>{e(r['status'])}</td>"
                     f"<td>{e(headline(r))}</td></tr>")
    parts.append("</table>")
    for r in rows:
        parts.append(f"<h3 id='{e(r['id'])}'>{r['number']}. {e(r['name'])} — {e(r['status'])}</h3>"
                     f"<p><i>{e(r['description'])}</i></p>")
        if r["status"] == "proxy" and r["proxy"]:
            parts.append(f"<p><b>Proxy.</b> {e(r['proxy'])}</p>")
        if r["status"] in ("not automatically measurable", "not measured"):
            parts.append(f"<p><b>Why.</b> {e(str(r['why']))}</p><p><b>What a person would have to do.</b> "
                         f"{e(str(r['how']))}</p>")
        for m in r["measurements"]:
            parts.append(_measurement_html(m))
        parts += [f"<p>Note: {e(n)}</p>" for n in r["notes"]]
        if r["plot"]:
            parts.append(f"<img src='{e(r['plot'])}' alt='{e(r['id'])}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _measurement_html(m: dict[str, Any]) -> str:
    e = html.escape
    out = [f"<p><b>{e(m['name'])}</b> — {e(m['metric'])}. Data: {e(m['data'])}."
           + (f" Reading: {e(m['reference'])}." if m.get("reference") else "") + "</p>",
           "<table><tr><th>model</th><th>value [95% interval]</th><th>n</th></tr>"]
    for v in m["values"]:
        out.append(f"<tr><td>{e(v['model'])}</td><td>{e(Value(**v).text(4))}</td><td>{v['n'] or ''}</td></tr>")
    out.append("</table>")
    if m.get("breakdown"):
        arms = [v["model"] for v in m["values"]]
        out.append("<table><tr><th>group</th>" + "".join(f"<th>{e(a)}</th>" for a in arms) + "</tr>")
        for group, per in m["breakdown"].items():
            cells = "".join(f"<td>{e(Value(**per[a]).text(3)) if a in per else ''}</td>" for a in arms)
            out.append(f"<tr><td>{e(group)}</td>{cells}</tr>")
        out.append("</table>")
    if m.get("note"):
        out.append(f"<p>{e(m['note'])}</p>")
    return "\n".join(out)


__all__ = ["Measurement", "build_rows", "headline", "markdown", "to_html", "write_report"]
