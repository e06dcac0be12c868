"""`burrow train`: the command surface end to end (baseline on a token store, RETRO on a memory, re-runs,
a run config TOML, and the one-line error for a run directory made with another memory)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from burrow.artefacts import read_json, write_json
from burrow.cli import app, main
from burrow.memory import Memory
from burrow.model import load_model

COMMON = ["--seq-len", "32", "--batch-size", "2", "--eval-every", "0", "--precision", "fp32", "--no-progress"]


def _app():
    return app


def test_train_baseline_then_rerun_is_a_no_op(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    model = model_toml(tmp_path / "base.toml", retro=False, chunk_size=8)  # no memory: the model sets m
    args = ["train", "--model", model, "--tokens", str(train_memory.store.dir), "-o", str(tmp_path / "run"),
            "--steps", "2", *COMMON]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    assert load_model(tmp_path / "run" / "final").config.vocab_size == train_memory.store.manifest["vocab_size"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 2
    again = CliRunner().invoke(_app(), args)
    assert again.exit_code == 0 and "already finished" in again.output


def test_train_from_a_run_config_toml(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    model = model_toml(tmp_path / "retro.toml", retro=True)
    run_toml = tmp_path / "run.toml"
    run_toml.write_text(f'[train]\nmodel = "{model}"\nmemory = "{train_memory.dir}"\nout = "{tmp_path / "r"}"\n'
                        "steps = 3\nseq_len = 32\nbatch_size = 2\nk = 1\n", encoding="utf-8")
    result = CliRunner().invoke(_app(), ["train", "--config", str(run_toml), "--steps", "2", "--no-progress",
                                         "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    saved = read_json(tmp_path / "r" / "config.json")
    assert saved["train"]["steps"] == 2 and saved["train"]["k"] == 1 and saved["model"]["retro"]


def test_run_made_with_another_memory_is_a_one_line_error(train_memory: Memory, model_toml, tmp_path: Path,
                                                          monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    model = model_toml(tmp_path / "retro.toml", retro=True)
    run = ["train", "--model", model, "-o", str(tmp_path / "run"), "--steps", "2", *COMMON]
    assert CliRunner().invoke(_app(), [*run, "--memory", str(train_memory.dir)]).exit_code == 0
    other = tmp_path / "other-mem"
    shutil.copytree(train_memory.dir, other)
    manifest = read_json(other / "memory.manifest.json")
    write_json(other / "memory.manifest.json", {**manifest, "n_docs": manifest["n_docs"] + 1})
    monkeypatch.setattr(sys, "argv", ["burrow", *run, "--memory", str(other)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "another memory" in err[0]


def test_an_out_folder_holding_a_model_or_a_memory_is_refused_and_left_as_it_was(
        train_memory: Memory, model_toml, tmp_path: Path, burrow_cli) -> None:
    """`-o RUN/final` (or a checkpoint, or a memory) wrote the run's config.json over the model's and left it
    unusable; a bad --seed or a --seq-len that is not a multiple of m left config.json in a new -o."""
    model = model_toml(tmp_path / "base.toml", retro=False, chunk_size=8)
    args = ["--model", model, "--tokens", str(train_memory.store.dir), "--steps", "1", *COMMON]
    code, _, err = burrow_cli("train", *args, "-o", tmp_path / "run")
    assert code == 0, err
    final = tmp_path / "run" / "final"
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    for out in (final, train_memory.dir):
        code, _, err = burrow_cli("train", *args, "-o", out)
        assert code == 2 and err.startswith("error: ") and "give -o a new folder" in err, err
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert not (train_memory.dir / "config.json").exists()
    for bad, needle in ((["--seed", "-1"], "seed"), (["--seq-len", "36"], "multiple of the chunk length")):
        code, _, err = burrow_cli("train", *args, *bad, "-o", tmp_path / "new")
        assert code == 2 and needle in err and "Traceback" not in err, err
        assert not (tmp_path / "new").exists()
