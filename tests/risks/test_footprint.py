"""The footprint tracker records time, energy (codecarbon, offline) and counted FLOPs per call."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

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
    assert all(0 <= c["energy_from_seconds"] < c["seconds"] + 60 for c in calls)
    assert len(calls) == 2 and calls[0]["flops"] == 6e9 and not calls[0]["interrupted"] and calls[1]["interrupted"]
    assert calls[0]["country"] == "FRA" and calls[0]["energy_kwh"] > 0 and calls[0]["emissions_kg"] > 0
    t = totals(read_footprint(tmp_path))["train"]
    assert t["calls"] == 2 and t["flops"] == 6e9


class _FakeTracker:
    """Stands in for codecarbon's tracker: its start blocks until ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.release, self.stopped = release, threading.Event()
        self.final_emissions_data = SimpleNamespace(
            energy_consumed=1e-6, emissions=1e-7, cpu_energy=1e-6, ram_energy=0.0, gpu_energy=0.0, cpu_power=5.0,
            country_iso_code="USA", region=None, cpu_model="fake", gpu_model="", codecarbon_version="0")

    def start(self) -> tuple[_FakeTracker, None]:
        self.release.wait(30)  # (a track that waited for the start would hang here without the limit)
        return self, None

    def stop(self) -> None:
        self.stopped.set()


def test_the_command_does_not_wait_for_the_tracker_to_start(tmp_path: Path, monkeypatch) -> None:
    """codecarbon's hardware detection (~2 s) runs beside the command: a call that records nothing ends without
    it, and the tracker that starts afterwards is stopped, not left sampling; a call that records waits for it
    and says from when the energy was measured."""
    import burrow.footprint as fp

    release = threading.Event()
    fake = _FakeTracker(release)
    monkeypatch.setattr(fp, "_start_tracker", lambda config: fake.start())
    cfg = FootprintConfig(enabled=True)
    with pytest.raises(RuntimeError), track(tmp_path / "never-made", "memory build", cfg):
        raise RuntimeError("no documents")  # a user error before any output: ends while the start blocks
    assert not fake.stopped.is_set()
    release.set()
    assert fake.stopped.wait(10)  # started after the command gave up on it: stopped at once
    fake2 = _FakeTracker(threading.Event())
    monkeypatch.setattr(fp, "_start_tracker", lambda config: fake2.start())
    threading.Timer(0.2, fake2.release.set).start()
    with track(tmp_path, "train", cfg):
        pass  # ends before the tracker has started: the record waits for it
    (call,) = read_footprint(tmp_path)["calls"]
    assert fake2.stopped.is_set() and call["energy_kwh"] == 1e-6 and call["energy_from_seconds"] >= 0.2


def test_a_tracker_that_fails_to_start_is_a_reason_in_the_record(tmp_path: Path, monkeypatch, capsys) -> None:
    import burrow.footprint as fp

    def broken(config):
        raise ValueError("numpy.dtype size changed")  # e.g. one of codecarbon's imports failing

    monkeypatch.setattr(fp, "_start_tracker", broken)
    with track(tmp_path, "train", FootprintConfig(enabled=True)):
        pass
    (call,) = read_footprint(tmp_path)["calls"]
    assert call["energy_error"] == "codecarbon could not start (ValueError: numpy.dtype size changed)"
    assert call["energy_from_seconds"] is None and "Traceback" not in capsys.readouterr().err


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
