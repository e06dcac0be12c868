"""The footprint tracker records time, energy (codecarbon, offline) and counted FLOPs per call."""

from __future__ import annotations

from pathlib import Path

import pytest

from burrow.footprint import FootprintConfig, read_footprint, totals, track, training_flops


def test_track_appends_records_and_skips(tmp_path: Path) -> None:
    cfg = FootprintConfig(country="FRA", measure_power_secs=1, enabled=True)
    with track(tmp_path, "train", cfg) as stage:
        sum(range(100_000))
        stage.flops, stage.flops_formula = 6e9, "6·N·D"
    with track(tmp_path, "train", cfg) as stage:
        stage.skipped = True
    with pytest.raises(RuntimeError), track(tmp_path, "train", cfg):
        raise RuntimeError("killed")
    calls = read_footprint(tmp_path)["calls"]
    assert len(calls) == 2 and calls[0]["flops"] == 6e9 and not calls[0]["interrupted"] and calls[1]["interrupted"]
    assert calls[0]["country"] == "FRA" and calls[0]["energy_kwh"] > 0 and calls[0]["emissions_kg"] > 0
    t = totals(read_footprint(tmp_path))["train"]
    assert t["calls"] == 2 and t["flops"] == 6e9


def test_disabled_and_bad_country(tmp_path: Path) -> None:
    with track(tmp_path, "x", FootprintConfig(enabled=False)):
        pass
    assert read_footprint(tmp_path) is None
    with pytest.raises(Exception, match="alpha-3"):
        FootprintConfig(country="France")


def test_training_flops_from_manifest(tmp_path: Path) -> None:
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "model.manifest.json").write_text('{"parameters": 1000}')
    flops, how = training_flops(tmp_path, 50)
    assert flops == 300_000 and "6·N·D" in how
