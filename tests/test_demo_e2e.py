"""The one real end-to-end pass `make test` runs: `burrow demo --quick` on the shared corpora, through the CLI."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from burrow.cli import app
from burrow.data.shared import find_data
from burrow.errors import BurrowError


def _data() -> Path:
    try:
        return find_data()
    except BurrowError as e:
        pytest.skip(f"shared corpora not available: {e}")


#: Training steps per model in the test: half of --quick's 60 (~25 s less of `make test`); every stage still runs.
E2E_STEPS = 30
# (name in the evaluation report, label in the demo's summary table)
MODELS = (("baseline", "baseline"), ("retro [OFF]", "RETRO[OFF]"), ("retro [ON]", "RETRO[ON]"))
# Files a re-run writes again by design: the summary (its stage times) and each run's config.json (training
# checks the run record, then rewrites it unchanged); the evaluation and its report are reused.
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
    caplog.set_level(logging.INFO, logger="burrow")
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--steps", str(E2E_STEPS), "-o", str(out)]
    result = CliRunner().invoke(app, args)
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
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    after = _snapshot(out)
    assert set(after) == set(before)
    changed = sorted(p for p in before if after[p][0] != before[p][0])
    assert changed and all(p.startswith(REWRITTEN) for p in changed), changed
    assert all(after[p][1] == before[p][1] for p in changed if p.startswith("runs/"))
    log = [r.getMessage() for r in caplog.records]
    for run in ("baseline", "retro"):
        assert any(m.startswith(f"{out / 'runs' / run} already finished") for m in log), log
    assert any(m.startswith("evaluation reused from") for m in log), log  # same models, memory, data, settings
    assert "evaluate: reused from" in again.output
    assert not [p for p in changed if p.startswith("report-valid/")], changed
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


def test_a_rerun_reuses_the_evaluation_only_when_nothing_it_read_changed(tmp_path: Path, monkeypatch) -> None:
    """The key covers the weights, the memory, the evaluation file and the settings; a summary whose report
    files are gone, or that cannot be read, is scored again."""
    from types import SimpleNamespace

    from burrow.artefacts import write_json, write_manifest
    from burrow.demo import DemoConfig, _evaluation_key, _reusable
    from burrow.evaluate.methods import MethodsConfig

    cfg = DemoConfig(out=tmp_path, quick=True)
    for run in ("baseline", "retro"):
        write_manifest(tmp_path / "runs" / run / "final", "model", weights_sha256=run)
    memory = SimpleNamespace(dir=tmp_path / "memory", manifest={"n_chunks": 10})
    data = tmp_path / "valid.txt"
    data.write_text("some text\n", encoding="utf-8")
    key = _evaluation_key(cfg, memory, data, MethodsConfig())
    report = tmp_path / "report" / "eval.md"
    report.parent.mkdir()
    report.write_text("# burrow evaluation\n", encoding="utf-8")
    summary = tmp_path / "summary-valid.json"
    write_json(summary, {"evaluation_key": key, "report": {"markdown": str(report)}, "table": {}})
    assert _reusable(summary, key)["evaluation_reused"] == str(summary)
    changed = []
    write_manifest(tmp_path / "runs" / "retro" / "final", "model", weights_sha256="retrained")
    changed.append(_evaluation_key(cfg, memory, data, MethodsConfig()))
    write_manifest(tmp_path / "runs" / "retro" / "final", "model", weights_sha256="retro")
    changed.append(_evaluation_key(cfg, SimpleNamespace(dir=memory.dir, manifest={"n_chunks": 11}), data,
                                   MethodsConfig()))
    changed.append(_evaluation_key(DemoConfig(out=tmp_path, quick=True, k=1), memory, data, MethodsConfig()))
    import burrow.demo

    real = burrow.demo._code_fingerprint
    monkeypatch.setattr(burrow.demo, "_code_fingerprint", lambda: "edited")  # a changed scorer
    changed.append(_evaluation_key(cfg, memory, data, MethodsConfig()))
    monkeypatch.setattr(burrow.demo, "_code_fingerprint", real)
    data.write_text("other text, longer\n", encoding="utf-8")
    changed.append(_evaluation_key(cfg, memory, data, MethodsConfig()))
    assert key not in changed and len(set(changed)) == len(changed)
    assert _reusable(summary, changed[0]) is None
    report.unlink()
    assert _reusable(summary, key) is None
    summary.write_text("{not json", encoding="utf-8")
    assert _reusable(summary, key) is None


@pytest.mark.parametrize("args, needle", [(["--split", "foo"], "--split must be valid or test"),
                                          (["--retro", "tiny"], "--retro tiny is not a RETRO model"),
                                          (["--baseline", "retro-tiny"], "--baseline retro-tiny is a RETRO model"),
                                          (["--baseline", "nosuch"], "nosuch")])
def test_bad_demo_settings_are_one_line_before_any_work(args, needle, tmp_path: Path, burrow_cli) -> None:
    """`--split foo` was a ValueError traceback; `--retro tiny` trained and evaluated both models for ~100 s, then
    a KeyError; `--baseline nosuch` was refused after ~45 s of hygiene and memory building."""
    code, _, err = burrow_cli("demo", "--quick", "-o", tmp_path / "demo", *args)
    assert code == 2 and err.startswith("error: ") and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "demo").exists()


def test_a_demo_error_that_advises_force_gives_the_demos_own_advice(tmp_path: Path, monkeypatch) -> None:
    """Training's "use another -o or --force", and a damaged artefact's "delete it and re-run with --force",
    named an option `burrow demo` does not have (only training's was reworded)."""
    import burrow.demo
    from burrow.demo import DemoConfig, run_demo

    monkeypatch.setattr(burrow.demo, "find_data", lambda *a, **k: tmp_path)
    monkeypatch.setattr(burrow.demo, "_quick_slice", lambda *a, **k: [])
    corrupt = f"{tmp_path}/corpus/train.report.json is corrupt (Expecting value)"
    built = f"{tmp_path}/memory holds a memory built from a.txt; this build reads b.txt"
    other = "runs/retro holds a run of another model (differs in ['d_model'])"
    for head, fix in ((other, "; use another -o or --force"), (corrupt, "; delete it and re-run with --force"),
                      (built, ". Give another -o, or --force to rebuild it from these inputs")):
        def refuse(*args: object, message: str = head + fix) -> None:
            raise BurrowError(message)

        monkeypatch.setattr(burrow.demo, "hygiene", refuse)
        with pytest.raises(BurrowError) as e:
            run_demo(DemoConfig(out=tmp_path / "demo", quick=True))
        assert str(e.value).startswith(head + "; the demo has no --force: delete"), str(e.value)
        assert "another -o" in str(e.value)


def test_a_quick_and_a_full_demo_need_their_own_folders(tmp_path: Path, monkeypatch, burrow_cli) -> None:
    """`make demo-quick` then `make demo` shared runs/demo: the full demo rebuilt the quick memory (~10 min)
    and only then failed on the quick runs. Now each has its own default folder, and one folder holding
    the other kind is refused before any work."""
    import burrow.demo
    from burrow.demo import DemoConfig, run_demo

    monkeypatch.setattr(burrow.demo, "find_data", lambda *a, **k: tmp_path)
    calls: list[str] = []

    def stop(*args: object) -> None:
        calls.append("hygiene")
        raise BurrowError("stopped after the checks")

    monkeypatch.setattr(burrow.demo, "hygiene", stop)
    monkeypatch.setattr(burrow.demo, "_quick_slice", lambda *a, **k: [])
    with pytest.raises(BurrowError, match="stopped after the checks"):
        run_demo(DemoConfig(out=tmp_path / "d", quick=True))
    with pytest.raises(BurrowError, match=r"holds a quick demo; give this full one another -o"):
        run_demo(DemoConfig(out=tmp_path / "d"))
    assert calls == ["hygiene"]
    monkeypatch.chdir(tmp_path)
    code, _, err = burrow_cli("demo", "--quick", "--data", tmp_path)
    assert code == 2 and (tmp_path / "runs" / "demo-quick" / "demo.json").is_file(), err
    assert not (tmp_path / "runs" / "demo").exists()


def test_an_unusable_device_is_refused_before_any_work(tmp_path: Path, burrow_cli) -> None:
    code, _, err = burrow_cli("demo", "--quick", "-o", tmp_path / "d", "--device", "nosuch")
    assert code == 2 and "unknown device 'nosuch'" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_hygiene_is_redone_when_its_input_files_change(tmp_path: Path) -> None:
    """Reuse checked only the input names: a changed corpus under the same name (or a quick slice of another
    --data) kept the old cleaned corpus, and the memory and models were built from it."""
    from burrow.demo import hygiene

    train = tmp_path / "train.jsonl"
    valid = tmp_path / "valid.txt"
    docs = ['{"text": "alpha beta gamma delta"}', '{"extract": "epsilon zeta eta theta"}']
    train.write_text("\n".join(docs) + "\n", encoding="utf-8")
    valid.write_text("iota kappa lambda mu\n", encoding="utf-8")
    out = tmp_path / "o"
    first = hygiene([str(train)], [str(valid)], out)[1]
    assert first["documents_in"] == 2
    assert hygiene([str(train)], [str(valid)], out)[1] == first  # reused
    train.write_text("\n".join([*docs, '{"text": "nu xi omicron pi"}']) + "\n", encoding="utf-8")
    assert hygiene([str(train)], [str(valid)], out)[1]["documents_in"] == 3
    # a folder made before the key existed is reused as it was (not cleaned again, which would rebuild its
    # memory and refuse its runs), and keyed from then on
    (out / "corpus" / "train.hygiene-key.json").unlink()
    before = (out / "corpus" / "train.jsonl.gz").stat().st_mtime_ns
    assert hygiene([str(train)], [str(valid)], out)[1]["documents_in"] == 3
    assert (out / "corpus" / "train.jsonl.gz").stat().st_mtime_ns == before
    train.write_text("\n".join(docs) + "\n", encoding="utf-8")
    assert hygiene([str(train)], [str(valid)], out)[1]["documents_in"] == 2


def test_a_demo_stopped_in_the_readable_example_keeps_its_evaluation(tmp_path: Path, monkeypatch) -> None:
    """The summary that lets a re-run reuse the ~20 minutes of scoring was written only after the readable
    example: a Ctrl-C there lost the whole evaluation."""
    from types import SimpleNamespace

    import burrow.demo
    from burrow.demo import DemoConfig, _reusable, run_demo

    memory = SimpleNamespace(dir=tmp_path / "memory", manifest={})
    report = tmp_path / "report.md"
    report.write_text("# report\n", encoding="utf-8")
    for name, value in (("find_data", lambda *a, **k: tmp_path), ("_quick_slice", lambda *a, **k: []),
                        ("hygiene", lambda *a: (tmp_path / "c", {})), ("build_memory", lambda *a, **k: (memory, [])),
                        ("compute_neighbours", lambda *a, **k: None), ("_train", lambda *a: object()),
                        ("build_bm25", lambda *a: None), ("_evaluation_key", lambda *a: "key"),
                        ("model_entries", lambda *a: {}), ("write_report", lambda *a: {"markdown": report}),
                        ("evaluate", lambda *a, **k: SimpleNamespace(timings={"baseline": 1.0})),
                        ("_summary", lambda *a: {"table": {"baseline": 1.0}, "report": {"markdown": str(report)}})):
        monkeypatch.setattr(burrow.demo, name, value)

    def interrupted(memory: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(burrow.demo, "_readable", interrupted)
    cfg = DemoConfig(out=tmp_path / "demo", quick=True, readable=True)
    with pytest.raises(KeyboardInterrupt):
        run_demo(cfg)
    kept = _reusable(tmp_path / "demo" / "summary-valid.json", "key")
    assert kept is not None and kept["table"] == {"baseline": 1.0}


def test_a_burrow_data_that_points_nowhere_is_named(tmp_path: Path, monkeypatch) -> None:
    from burrow.data.shared import find_data

    monkeypatch.setenv("BURROW_DATA", str(tmp_path / "nope"))
    with pytest.raises(BurrowError, match=rf"at {tmp_path / 'nope'} \(\$BURROW_DATA\)"):
        find_data()


def test_a_hygiene_stopped_while_cleaning_again_is_not_trusted_later(tmp_path: Path, monkeypatch) -> None:
    """The key was deleted before cleaning again, but the old corpus and report survived a stop: the next run
    took the folder for one made before the key existed and kept the stale corpus."""
    import burrow.demo
    from burrow.demo import hygiene

    train = tmp_path / "train.jsonl"
    valid = tmp_path / "valid.txt"
    train.write_text('{"text": "alpha beta gamma delta"}\n', encoding="utf-8")
    valid.write_text("iota kappa lambda mu\n", encoding="utf-8")
    out = tmp_path / "o"
    assert hygiene([str(train)], [str(valid)], out)[1]["documents_in"] == 1
    train.write_text('{"text": "alpha beta gamma delta"}\n{"text": "nu xi omicron pi"}\n', encoding="utf-8")
    real = burrow.demo.clean_corpus

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(burrow.demo, "clean_corpus", stopped)
    with pytest.raises(KeyboardInterrupt):
        hygiene([str(train)], [str(valid)], out)
    monkeypatch.setattr(burrow.demo, "clean_corpus", real)
    assert hygiene([str(train)], [str(valid)], out)[1]["documents_in"] == 2
