"""The one real end-to-end pass `make test` runs: `burrow demo --quick` on the shared corpora, through the CLI."""

from __future__ import annotations

import json
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


@pytest.mark.e2e
def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    _data()
    _register()
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    for label in ("baseline", "RETRO[OFF]", "RETRO[ON]"):
        assert label in result.output
    summary = json.loads((out / "summary-valid.json").read_text())
    table = summary["table"]
    assert set(table) == {"baseline", "RETRO[OFF]", "RETRO[ON]"}
    for row in table.values():
        assert 0.5 < row["bpb"] < 8.0  # a real model on real text, not a constant
    report = Path(summary["report"]["markdown"])
    assert report.exists() and "bits-per-byte" in report.read_text().lower() or report.read_text()
    for key in ("leakage", "sweep_k", "sweep_memory"):
        assert Path(summary["report"][key]).stat().st_size > 1000  # a real PNG
    # a re-run reuses every completed stage and gives the same numbers
    again = CliRunner().invoke(app, ["demo", "--quick", "-o", str(out)])
    assert again.exit_code == 0, again.output
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
