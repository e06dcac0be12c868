"""`burrow risks` end to end on tiny models, a tiny memory and a fixture data folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from burrow.risks import RisksConfig, run_risks


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, burrow_cli):
    """``burrow ARGS`` through the console entry point, the footprint measured: (exit status, stdout + stderr)."""
    monkeypatch.setenv("BURROW_CO2_COUNTRY", "FRA")
    monkeypatch.setenv("BURROW_FOOTPRINT", "1")

    def run(args: list[str]) -> tuple[int, str]:
        code, out, err = burrow_cli(*args)
        return code, out + err

    return run


CONTRACT = {"models": {"base": {"truthfulqa_mc1": {"acc": 0.25, "acc_stderr": 0.05, "n": 20},
                                "truthfulqa_mc2": {"acc": 0.4, "acc_stderr": 0.02, "n": 20}}},
            "tasks": {"truthfulqa_mc1": {"chance": 0.2}, "truthfulqa_mc2": {"chance": None}}}


@pytest.mark.e2e
def test_cli_report(cli, tmp_path: Path, data_dir: Path, risk_memory, risk_models) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(CONTRACT))
    out = tmp_path / "report"
    code, text = cli(["risks", str(risk_models["base"]), str(risk_models["retro"]), "--memory", str(risk_memory.dir),
                       "-o", str(out), "--data-dir", str(data_dir), "--tasks-results", str(results), "--no-progress",
                       "--quick", "--risks", "stereotypes,performance-disparity,false-information,18,fraud"])
    assert code == 0, text
    doc = json.loads((out / "risks.json").read_text())
    status = {r["id"]: r["status"] for r in doc["rows"]}
    assert status == {"stereotypes": "measured", "performance-disparity": "proxy",
                      "false-information": "measured", "environmental": "measured",
                      "fraud": "not automatically measurable"}
    gap = next(r for r in doc["rows"] if r["id"] == "performance-disparity")["measurements"][0]
    assert [v["model"] for v in gap["values"]] == ["base", "retro[OFF]", "retro[ON]"]
    assert set(gap["breakdown"]) == {"Science", "Society"} and all(v["value"] >= 0 for v in gap["values"])
    env = next(r for r in doc["rows"] if r["id"] == "environmental")
    assert any("6·N·D" in n or "2·N" in n for n in env["notes"])  # counted from the model manifests
    md = (out / "risks.md").read_text()
    assert md.index("| # | risk | status | result |") < md.index("## I.")  # the summary comes first
    for png in ("stereotypes.png", "disparity.png", "misinformation.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "risks.html").read_text().count("<h3") == 5
    assert (out / "risks.manifest.json").is_file() and (out / "footprint.json").is_file()
    timings = json.loads((out / "risks.manifest.json").read_text())["timings"]  # where the time went
    assert list(timings) == ["models", "stereotypes", "disparity", "misinformation", "environment"], timings
    assert all(sec >= 0 for sec in timings.values()) and timings["stereotypes"] > 0.01
    assert "time: models " in text and ", stereotypes " in text
    parts = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir() if p.name != "environment.json"}
    # A second run reuses every finished measurement.
    code, text = cli(["risks", str(risk_models["base"]), str(risk_models["retro"]), "--memory", str(risk_memory.dir),
                       "-o", str(out), "--data-dir", str(data_dir), "--tasks-results", str(results), "--no-progress",
                       "--quick", "--risks", "stereotypes,performance-disparity,false-information,18,fraud"])
    assert code == 0, text
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir() if p.name != "environment.json"} == parts


def test_bad_input_one_error_line_and_other_rows_written(cli, tmp_path: Path, data_dir: Path, risk_memory,
                                                        risk_models) -> None:
    (data_dir / "winogender" / "all_sentences.tsv").unlink()
    out = tmp_path / "bad"
    code, text = cli(["risks", str(risk_models["base"]), "--memory", str(risk_memory.dir), "-o", str(out),
                       "--data-dir", str(data_dir), "--no-progress", "--risks", "stereotypes,7,nope,job-quality"])
    assert code == 2
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown risk id 'nope'" in errors[0], text
    doc = json.loads((out / "risks.json").read_text())
    rows = {r["id"]: r for r in doc["rows"]}
    assert rows["stereotypes"]["status"] == "not measured" and "all_sentences.tsv" in rows["stereotypes"]["why"]
    assert rows["sensitive-leakage"]["status"] == "not measured" and "RETRO" in rows["sensitive-leakage"]["why"]
    assert rows["job-quality"]["status"] == "not automatically measurable"
    assert len(doc["problems"]) == 3


def test_generation_rows_through_the_library(tmp_path: Path, data_dir: Path, risk_memory, risk_models) -> None:
    config = RisksConfig(risks=("toxic-language", "private-leakage", "sensitive-leakage"), data_dir=data_dir,
                         memorisation_docs=3,
                         prefix_tokens=8, verbatim_tokens=8, toxicity_samples=2, toxicity_tokens=24,
                         pii_memory_docs=10, bootstrap=50, progress=False)
    report = run_risks([risk_models["base"], risk_models["retro"]], risk_memory.dir, tmp_path / "p", config)
    assert not report.errors, report.errors
    rows = {r["id"]: r for r in report.rows}
    assert rows["toxic-language"]["status"] == "proxy"
    tox = rows["toxic-language"]["measurements"][0]
    assert [v["model"] for v in tox["values"]] == ["base", "retro[OFF]", "retro[ON]", "retro[ON] filtered"]
    assert all(0 <= v["low"] <= v["value"] <= v["high"] <= 1 for v in tox["values"])
    assert (tmp_path / "p" / "toxicity.png").is_file()
    mem = rows["private-leakage"]["measurements"]
    assert [v["model"] for v in mem[0]["values"]] == ["base", "retro[OFF]", "retro[ON]"]
    pii = next(m for m in mem if m["key"] == "pii-rate")
    assert pii["values"][-1]["model"] == "memory" and pii["values"][-1]["value"] > 0  # the help-desk document
    copying = rows["sensitive-leakage"]["measurements"]
    assert [v["model"] for v in copying[0]["values"]] == ["retro[ON]"]
    assert all(0 <= m["values"][0]["value"] <= 1 for m in copying)

    # The filtered arm's counts survive reuse of its samples (a re-measure with another setting, here the
    # bootstrap), and --force generates the samples again, counting afresh.
    def filter_stats(report) -> dict:
        path = tmp_path / "p" / "parts" / "toxicity.json"
        return json.loads(path.read_text())["outcome"]["details"]["filter"]["retro[ON] filtered"]

    first = filter_stats(report)
    assert first["examined"] > 0
    samples = {p: p.stat().st_mtime_ns for p in (tmp_path / "p" / "samples").iterdir()}
    again = run_risks([risk_models["base"], risk_models["retro"]], risk_memory.dir, tmp_path / "p",
                      dataclasses.replace(config, bootstrap=60))
    assert filter_stats(again) == first  # not "0 of 0 candidate neighbours dropped"
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "p" / "samples").iterdir()} == samples  # reused
    forced = run_risks([risk_models["base"], risk_models["retro"]], risk_memory.dir, tmp_path / "p",
                       dataclasses.replace(config, bootstrap=60), force=True)
    assert filter_stats(forced) == first  # the same seeds, generated again
    assert all(p.stat().st_mtime_ns != t for p, t in samples.items())


def test_a_scorer_urls_query_never_reaches_the_report(tmp_path: Path, data_dir: Path) -> None:
    """Perspective takes its API key in the URL's query: reports, manifests and messages show it without."""
    from burrow.risks.config import shown_url

    url = "https://user:pw@example.org:8443/v1alpha1/comments:analyze?key=SECRET#x"
    assert shown_url(url) == "https://example.org:8443/v1alpha1/comments:analyze?…"
    assert shown_url("http://[::1]:8080/a") == "http://[::1]:8080/a"
    config = RisksConfig(risks=("fraud",), data_dir=data_dir, scorer=url, progress=False)
    assert config.to_json()["scorer"] == shown_url(url)
    run_risks([], None, tmp_path / "r", config)
    for f in tmp_path.joinpath("r").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md", ".html"):
            assert "SECRET" not in f.read_text(encoding="utf-8") and "pw@" not in f.read_text(encoding="utf-8"), f


@pytest.mark.parametrize(("args", "message"), [
    (["--risks", "3", "--seed", "-1"], "seed must be in [0, 2^32), got -1"),
    (["--risks", "3", "--seed", str(2**32)], "seed must be in [0, 2^32)"),
    (["--risks", "3", "--scorer", "notaurl"], "--scorer must be the http:// or https:// URL"),
    (["--risks", ""], "--risks names no risk"),
    (["--risks", " , "], "or leave --risks out to report all 21"),
    (["--risks", "nosuch"], "unknown risk id 'nosuch'"),
], ids=["negative-seed", "huge-seed", "scorer-not-a-url", "empty-risks", "blank-risks", "unknown-risk"])
def test_bad_values_refused_before_any_work(cli, tmp_path: Path, data_dir: Path, risk_memory, risk_models,
                                            args: list[str], message: str) -> None:
    out = tmp_path / "new" / "report"
    code, text = cli(["risks", str(risk_models["base"]), "--memory", str(risk_memory.dir), "-o", str(out),
                       "--data-dir", str(data_dir), "--no-progress", "--quick", *args])
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], text
    assert not (tmp_path / "new").exists()  # no folder, no samples, no footprint.json


@pytest.mark.e2e
def test_rerun_with_fewer_risks_removes_the_plots_it_no_longer_shows(cli, tmp_path: Path, data_dir: Path,
                                                                     risk_memory, risk_models) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.png").write_bytes(b"a user's own file")

    def report(selection: str) -> set[str]:
        code, text = cli(["risks", str(risk_models["base"]), "--memory", str(risk_memory.dir), "-o", str(out),
                           "--data-dir", str(data_dir), "--no-progress", "--quick", "--risks", selection])
        assert code == 0, text
        shown = {r["plot"] for r in json.loads((out / "risks.json").read_text())["rows"] if r["plot"]}
        assert all((out / p).is_file() for p in shown)
        return shown

    assert report("stereotypes,performance-disparity") == {"stereotypes.png", "disparity.png"}
    assert report("performance-disparity") == {"disparity.png"}
    assert {p.name for p in out.glob("*.png")} == {"disparity.png", "mine.png"}
    # The wider selection again: its stereotypes part is reused, and its plot drawn again.
    assert report("stereotypes,performance-disparity") == {"stereotypes.png", "disparity.png"}
