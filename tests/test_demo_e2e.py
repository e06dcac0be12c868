"""The one real end-to-end pass `make test` runs: `burrow demo --quick` on the shared corpora, through the CLI."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from burrow.cli import _register, app
from burrow.data.shared import find_data
from burrow.errors import BurrowError


def _data() -> Path:
    try:
        return find_data()
    except BurrowError as e:
        pytest.skip(f"shared corpora not available: {e}")


# (name in the evaluation report, label in the demo's summary table)
MODELS = (("baseline", "baseline"), ("retro [OFF]", "RETRO[OFF]"), ("retro [ON]", "RETRO[ON]"))
# Files a re-run writes again by design: the report and summary (evaluation is re-scored, cheaply) and each
# run's config.json (training checks the run record, then rewrites it unchanged).
REWRITTEN = ("report-valid/", "summary-valid.json", "runs/baseline/config.json", "runs/retro/config.json")


def _snapshot(out: Path) -> dict[str, tuple[int, str]]:
    """relative path -> (mtime_ns, sha256) of every file under ``out``."""
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(out.rglob("*")) if p.is_file()}


def _check_report(summary: dict, output: str) -> None:
    """The printed table, eval.md and eval.json hold the same numbers, the leakage and sweep sections and plots."""
    table = summary["table"]
    assert "WikiText-2 valid bits-per-byte" in output
    for _, label in MODELS:
        printed = next(line for line in output.splitlines() if line.startswith(f"{label} "))
        assert f"{table[label]['bpb']:.4f}" in printed
    md = Path(summary["report"]["markdown"]).read_text(encoding="utf-8")
    assert md.startswith("# burrow evaluation\n")
    for name, label in MODELS:
        row = next(line for line in md.splitlines() if line.startswith(f"{name} "))
        assert f"{table[label]['bpb']:.4f}" in row, row
    assert "gain vs baseline" in md and "Mean r(C) = " in md
    for heading in ("## Leakage (RETRO §2.6)", "## Neighbours at evaluation"):  # memory sweep: off by default
        assert heading in md
    assert next(line for line in md.splitlines() if line.startswith("| retro [ON] |")).count("|") >= 3
    for key in ("leakage", "sweep_k"):
        assert f"![{key}]({key}.png)" in md
        assert Path(summary["report"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(summary["report"][key]).stat().st_size > 1000  # a real plot, not an empty canvas
    report = json.loads(Path(summary["report"]["json"]).read_text(encoding="utf-8"))
    for name, label in MODELS:
        assert report["models"][name]["bpb"] == pytest.approx(table[label]["bpb"])


@pytest.mark.e2e
def test_quick_demo_end_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _data()
    _register()
    caplog.set_level(logging.INFO, logger="burrow")
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary-valid.json").read_text())
    table = summary["table"]
    assert set(table) == {label for _, label in MODELS}
    for row in table.values():
        assert 0.5 < row["bpb"] < 8.0  # a real model on real text, not a constant
    _check_report(summary, result.output)
    stages, timings = summary["stages"], summary["evaluate_timings"]  # where the time went, stage by stage
    assert list(stages) == ["hygiene", "memory", "train baseline", "train RETRO", "bm25", "evaluate"]
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) <= summary["seconds"]
    assert {"baseline", "retro [OFF]", "retro [ON]", "neighbours", "methods", "leakage", "sweep k"} <= set(timings)
    assert "time: hygiene " in result.output and "  evaluate: baseline " in result.output
    first = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("retrieving 10 neighbours") for m in first)
    assert sum(m.startswith("finished ") for m in first) == 2 and not any("already finished" in m for m in first)

    # A re-run reuses every completed stage: no stage output is written again, the logs say so, same numbers.
    before = _snapshot(out)
    caplog.clear()
    again = CliRunner().invoke(app, ["demo", "--quick", "-o", str(out)])
    assert again.exit_code == 0, again.output
    after = _snapshot(out)
    assert set(after) == set(before)
    changed = sorted(p for p in before if after[p][0] != before[p][0])
    assert changed and all(p.startswith(REWRITTEN) for p in changed), changed
    assert all(after[p][1] == before[p][1] for p in changed if p.startswith("runs/"))
    log = [r.getMessage() for r in caplog.records]
    for run in ("baseline", "retro"):
        assert any(m.startswith(f"{out / 'runs' / run} already finished") for m in log), log
    assert any(m.startswith("reusing cached target-chunk neighbours") for m in log), log
    redone = [m for m in log if m.startswith(("training ", "retrieving ", "kept ", "finished ", "step "))]
    assert not redone, redone
    assert json.loads((out / "summary-valid.json").read_text())["table"] == table


def test_demo_without_data_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "burrow.cli", "demo", "--quick", "--data", str(tmp_path / "none"),
                           "-o", str(tmp_path / "o")], capture_output=True, text=True,
                          env={"BURROW_DATA": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no data folder") and "Traceback" not in proc.stderr
