"""End to end on a tiny memory: `burrow eval` through typer's CliRunner, and the library call behind it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from burrow.evaluate import EvalConfig, evaluate, load_eval_data, model_entries
from burrow.memory.build import build_memory
from burrow.model import build_model, save_model
from burrow.presets import get_preset


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, encoder, make_corpus):
    """A memory of the tiny corpus (m = 8), a validation file, a baseline and a RETRO model saved to disk.

    Built once for the module: the memory build dominates these tests' time.
    """
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig
    from burrow.memory.encode import EncoderConfig

    tmp_path = tmp_path_factory.mktemp("eval")
    corpus = make_corpus(tmp_path / "corpus")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=16), chunk_size=8)
    memory, _ = build_memory([str(corpus)], tmp_path / "mem", config, progress=False, encoder=encoder)
    valid = tmp_path / "valid.txt"
    valid.write_text("A volcano erupts lava and ash over Sicily. Cats purr and sleep in warm places.\n"
                     "Bakers knead dough and bake bread in hot ovens; the crust turns golden.\n", encoding="utf-8")
    shape = dict(vocab_size=memory.tokenizer.vocab_size, chunk_size=8, retrieved_len=16, max_seq_len=32,
                 d_model=64, n_layers=2, n_heads=2, enc_d_model=64, enc_n_heads=2)
    torch.manual_seed(0)
    base = build_model(get_preset("tiny", **{k: v for k, v in shape.items() if not k.startswith("enc")}))
    retro = build_model(get_preset("retro-tiny", **shape, cca_layers=(2,)))
    retro.load_state_dict(base.state_dict(), strict=False)  # same decoder: a fresh RETRO equals its baseline
    save_model(base, tmp_path / "base-run" / "final")
    save_model(retro, tmp_path / "retro-model")
    return memory, valid, tmp_path


def test_cli_eval_prints_models_side_by_side_and_writes_the_report(setup) -> None:
    memory, valid, tmp = setup
    app = typer.Typer()
    from burrow.cli.evaluate import register

    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `eval` a named sub-command
    out = tmp / "eval"
    args = ["eval", str(tmp / "base-run"), str(tmp / "retro-model"), "--memory", str(memory.dir), "--data",
            str(valid), "--k", "2", "--leakage", "--sweep-k", "--sweep-memory", "--precision", "fp32", "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for row in ("base-run ", "retro-model [OFF]", "retro-model [ON]", "bpb α≤0.125"):
        assert row in res.output
    report = json.loads((out / "eval.json").read_text())
    models = report["models"]
    assert set(models) == {"base-run", "retro-model [OFF]", "retro-model [ON]"}
    # zero-initialised CCA + the baseline's decoder: OFF and ON equal the baseline
    assert models["retro-model [ON]"]["bpb"] == pytest.approx(models["base-run"]["bpb"], rel=1e-5)
    assert models["retro-model [OFF]"]["bpb"] == pytest.approx(models["base-run"]["bpb"], rel=1e-5)
    assert report["data"]["bytes"] == len(valid.read_text(encoding="utf-8").encode())
    assert set(report["sweep_k"]["retro-model [ON]"]) == {"1", "2", "4", "10"}
    # 6 documents: 1/16 and 1/8 both keep 1 (a repeated row before), 1/4 keeps 2, 1/2 keeps 3
    assert [(p["fraction"], p["documents"]) for p in report["sweep_memory"]] == [(1 / 16, 1), (1 / 4, 2), (1 / 2, 3),
                                                                             (1.0, 6)]
    assert len(report["leakage"]["bpb_alpha"]["base-run"]) == 65
    for name in ("leakage.png", "sweep_k.png", "sweep_memory.png", "eval.md", "chunks.npz"):
        assert (out / name).stat().st_size > 0
    assert list((out / "neighbours").glob("target-*.npz"))  # RETRO[ON] queries are rows of the target search


def test_library_evaluate_finds_leakage_of_memory_text(setup) -> None:
    memory, valid, tmp = setup
    from burrow.model import load_model

    retro = load_model(tmp / "retro-model")
    # the validation text is copied from the memory's documents: leakage must see it
    copied = tmp / "copied.txt"
    copied.write_text((tmp / "corpus" / "cats.txt").read_text(encoding="utf-8"), encoding="utf-8")
    data = load_eval_data([str(copied)], memory.tokenizer, memory.chunk_size)
    result = evaluate(model_entries("retro", retro), memory, data,
                      EvalConfig(leakage=True, precision="fp32", sweep_k=(1, 10)), cache_dir=tmp / "e")
    assert result.leakage is not None and np.mean(result.leakage.r >= 1.0) > 0.8
    assert result.bpb("retro [ON]", 1.0) == pytest.approx(result.scores["retro [ON]"].bpb)
    again = evaluate(model_entries("retro", retro), memory, data, EvalConfig(precision="fp32"), cache_dir=tmp / "e")
    assert again.bpb("retro [ON]") == pytest.approx(result.bpb("retro [ON]"), rel=1e-9)  # cached neighbours
    assert result.docs_in_memory == 0  # the same text under another name: leakage's business, not the same document
    own = load_eval_data([str(tmp / "corpus" / "cats.txt")], memory.tokenizer, memory.chunk_size)
    inside = evaluate(model_entries("retro", retro), memory, own, EvalConfig(precision="fp32"), cache_dir=tmp / "e2")
    assert inside.docs_in_memory == 1  # the memory's own document: said in the log, eval.json and eval.md
    from burrow.evaluate import write_report

    write_report(inside, tmp / "e2")
    assert json.loads((tmp / "e2" / "eval.json").read_text())["docs_in_memory"] == 1
    assert "1 of 1 evaluated documents are also in the memory" in (tmp / "e2" / "eval.md").read_text()


def test_cli_eval_methods_each_against_its_own_base(setup) -> None:
    memory, valid, tmp = setup
    app = typer.Typer()
    from burrow.cli.evaluate import register

    register(app)
    app.command("noop")(lambda: None)
    out = tmp / "eval-methods"
    args = ["eval", str(tmp / "base-run"), str(tmp / "retro-model"), "--memory", str(memory.dir), "--data",
            str(valid), "--method", "knnlm,random", "--method", "incontext", "--retriever", "dense", "--knn-lambda",
            "0.25", "--knn-temperature", "10", "--stride", "8",
            "--precision", "fp32", "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "eval.json").read_text())
    assert report["methods"]["base-run +kNN-LM"]["base"] == "base-run"
    assert report["methods"]["base-run +kNN-LM"]["method"] == "knnlm"
    assert report["methods"]["retro-model [random]"]["base"] == "retro-model [OFF]"
    assert report["methods"]["retro-model [ON]"]["base"] == "retro-model [OFF]"
    assert report["methods"]["base-run +in-context dense"]["base"] == "base-run (in-context windows)"
    assert report["gains"]["base-run +kNN-LM"]["reference"] == "base-run"
    assert "retrieval methods, each against its own base" in res.output
    main = res.output.split("retrieval methods")[0]  # the main table names a row's reference when it is not its own
    on = next(line for line in main.splitlines() if line.startswith("retro-model [ON] "))
    knn = next(line for line in main.splitlines() if line.startswith("base-run +kNN-LM "))
    assert " vs " not in on and " vs " not in knn  # [ON]: against the baseline here, its [OFF] in the methods table
    vs_base = report["gains"]["retro-model [ON]"]["vs_reference"]
    assert vs_base["reference"] == "base-run"
    assert report["gains"]["retro-model [ON]"]["reference"] == "retro-model [OFF]"
    assert f"{vs_base['alpha=1']['gain']:+.4f} [" in on
    random_row = next(line for line in main.splitlines() if line.startswith("retro-model [random] "))
    assert random_row.endswith(" vs retro-model [OFF]")
    bad = CliRunner().invoke(app, [*args[:-2], "--method", "nonsense", "-o", str(out)])
    assert bad.exit_code != 0 and "unknown method" in str(bad.exception or bad.output)


def test_cli_eval_seeds_are_one_arm_with_an_interval(setup) -> None:
    memory, valid, tmp = setup
    from burrow.model import load_model, save_model

    other = load_model(tmp / "base-run" / "final")
    torch.manual_seed(1)
    for p in other.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    save_model(other, tmp / "base-seed2" / "final")
    app = typer.Typer()
    from burrow.cli.evaluate import register

    register(app)
    app.command("noop")(lambda: None)
    out = tmp / "eval-seeds"
    res = CliRunner().invoke(app, ["eval", f"base={tmp / 'base-run'},{tmp / 'base-seed2'}", str(tmp / "retro-model"),
                                   "--memory", str(memory.dir), "--data", str(valid), "--precision", "fp32",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "eval.json").read_text())
    assert set(report["models"]) == {"base", "retro-model [OFF]", "retro-model [ON]"}
    seeds = report["seeds"]["base"]
    assert seeds["seeds"] == 2 and seeds["low"] <= seeds["mean"] <= seeds["high"]
    assert report["models"]["base"]["bpb"] == pytest.approx(np.mean(seeds["bpb"]), rel=1e-9)  # equal bytes per seed
    assert "2 seeds" in res.output


def test_k_sweep_on_a_document_subset_scores_those_documents(setup) -> None:
    """``sweep_k_docs``: every k of the sweep is scored on the first N documents only, and its main-k
    point equals a plain evaluation of those N documents."""
    memory, valid, tmp = setup
    from burrow.model import load_model

    retro = load_model(tmp / "retro-model")
    data = load_eval_data([str(valid), str(tmp / "corpus" / "cats.txt")], memory.tokenizer, memory.chunk_size)
    assert data.n_docs >= 2
    swept = evaluate(model_entries("retro", retro), memory, data,
                     EvalConfig(precision="fp32", sweep_k=(1, 2), sweep_k_docs=1), cache_dir=tmp / "s1")
    first = evaluate(model_entries("retro", retro), memory, data.first_docs(1), EvalConfig(precision="fp32"),
                     cache_dir=tmp / "s2")
    assert swept.sweep_k_docs == 1
    assert swept.sweep_k["retro [ON]"][2] == pytest.approx(first.bpb("retro [ON]"), rel=1e-9)
    assert swept.sweep_k["retro [ON]"][2] != pytest.approx(swept.bpb("retro [ON]"), rel=1e-9)  # not all docs


def _digest(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_eval_refuses_a_memory_or_a_run_as_its_output_before_loading(setup, burrow_cli, monkeypatch, tmp_path) -> None:
    """-o a memory or a run folder: the report would overwrite the memory's chunks.npz or land inside the run."""
    import shutil

    import burrow.evaluate.runs as runs

    memory, valid, tmp = setup
    monkeypatch.setattr(runs, "load_named_model", lambda run: pytest.fail("a model loaded before the refusal"))
    mem = shutil.copytree(memory.dir, tmp_path / "memc")
    for out, what in ((mem, "is a memory"), (tmp / "base-run", "is a run or model"),
                      (tmp / "base-run" / "final", "is a run or model")):
        before = _digest(out)
        code, _, err = burrow_cli("eval", tmp / "base-run", "--memory", memory.dir, "-d", valid, "-o", out)
        assert code == 2 and err.startswith("error: ") and what in err and len(err.strip().splitlines()) == 1, err
        assert _digest(out) == before  # nothing written (no footprint.json either)


def test_eval_runs_named_like_seeds_stay_separate_runs(setup, burrow_cli, tmp_path) -> None:
    """Folders named ``c#1`` and ``c#2`` are two runs, not one arm of two seeds."""
    memory, valid, tmp = setup
    for name in ("c#1", "c#2"):
        (tmp_path / name).symlink_to(tmp / "base-run")
    code, out, err = burrow_cli("eval", tmp_path / "c#1", tmp_path / "c#2", "--memory", memory.dir, "-d", valid,
                                "--precision", "fp32", "-o", tmp_path / "e")
    assert code == 0, err
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert set(report["models"]) == {"c#1", "c#2"} and not report.get("seeds")
    assert "seeds" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["A={base},,{base}"], "arm A has an empty run"),
    (["A={base},{base}"], "lists"),
    (["A={base}", "A={base}"], "arm name A is given twice"),
    (["A={base},{retro}"], "mixes baseline and RETRO runs"),
    (["{retro}", "--method", "knnlm"], "--method knnlm applies to baseline runs only"),
    (["{base}", "--method", "random"], "--method random applies to RETRO runs only"),
    (["{base}", "--method", "retro"], "--method retro applies to RETRO runs only"),
    (["{base}", "--lm", "smollm2"], "add --method incontext, or drop --lm"),
    (["{base}", "--method", ""], "--method has an empty entry"),
    (["{base}", "--method", ","], "--method has an empty entry"),
    (["{base}", "--method", "incontext"], "has no BM25 index"),
    (["{base}", "--method", "incontext", "--retriever", "dense", "--stride", "100000"], "--stride 100000"),
    (["{base}", "--method", "knnlm", "--max-docs", "1"], "at least 2 documents"),
    (["{base}", "-d", "{tmp}/nosuch.txt"], "nosuch.txt"),
    (["{base}", "-d", ""], "(--data) is empty"),
    (["{base}", "--seq-len", "100"], "--seq-len 100 must be a positive multiple"),
    (["{base}", "--seq-len", "1"], "--seq-len must be ≥ 2"),
    (["{base}", "--batch-tokens", "0"], "--batch-tokens must be ≥ 1"),
    (["{base}", "--max-docs", "0"], "--max-docs must be ≥ 1"),
    (["{base}", "--knn-lambda", "0.5"], "--knn-temperature"),
    (["{base}", "--knn-lambda", "1", "--knn-temperature", "1"], "λ must be in [0, 1)"),
    (["{base}", "--txt-split", "pages"], "unknown txt_split 'pages'"),
])
def test_eval_refuses_bad_input_before_loading_any_model(setup, burrow_cli, monkeypatch, tmp_path, args,
                                                         message) -> None:
    """One ``error:`` line in the CLI's words, before a model loads, nothing written to -o."""
    import burrow.evaluate.runs as runs

    memory, valid, tmp = setup
    monkeypatch.setattr(runs, "load_named_model", lambda run: pytest.fail("a model loaded before the refusal"))
    (tmp / "c-plain.txt").write_text("one short document only.\n", encoding="utf-8")
    fill = {"base": tmp / "base-run", "retro": tmp / "retro-model", "tmp": tmp}
    argv = [a.format(**fill) for a in args]
    if "-d" not in argv:
        argv += ["-d", str(tmp / "c-plain.txt") if "--max-docs" in argv else str(valid)]
    code, _, err = burrow_cli("eval", *argv, "--memory", memory.dir, "-o", tmp_path / "e")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("args", [["{retro}"], ["{base}", "--leakage"], ["{base}", "--method", "knnlm"]])
def test_eval_without_a_memory_is_refused_before_loading(setup, burrow_cli, monkeypatch, tmp_path, args) -> None:
    import burrow.evaluate.runs as runs

    memory, valid, tmp = setup
    monkeypatch.setattr(runs, "load_named_model", lambda run: pytest.fail("a model loaded before the refusal"))
    argv = [a.format(base=tmp / "base-run", retro=tmp / "retro-model") for a in args]
    code, _, err = burrow_cli("eval", *argv, "-d", valid, "-o", tmp_path / "e")
    assert code == 2 and "needs a memory (--memory)" in err and "EvalData" not in err, err


@pytest.mark.parametrize("inside", ["", "report"])
def test_eval_refuses_an_output_inside_its_data_folder(setup, burrow_cli, monkeypatch, tmp_path, inside) -> None:
    """A data folder is read recursively: a report written in it (eval.md) was scored as a document by the next
    run into the same -o. Refused in one line before any model loads."""
    import burrow.evaluate.runs as runs

    memory, valid, tmp = setup
    monkeypatch.setattr(runs, "load_named_model", lambda run: pytest.fail("a model loaded before the refusal"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "valid.txt").write_text(valid.read_text(encoding="utf-8"), encoding="utf-8")
    out = data / inside if inside else data
    code, _, err = burrow_cli("eval", tmp / "base-run", "--memory", memory.dir, "-d", data, "-o", out)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "inside the evaluation data folder" in err
    assert sorted(p.name for p in data.rglob("*")) == ["valid.txt"]


def test_eval_rerun_removes_its_own_stale_plots_only(setup, burrow_cli, tmp_path) -> None:
    """A re-run without --leakage into the same -o leaves no leakage.png of the earlier report; other files stay."""
    memory, valid, tmp = setup
    out = tmp_path / "e"
    base = ["eval", tmp / "base-run", "--memory", memory.dir, "-d", valid, "--precision", "fp32", "-o", out]
    assert burrow_cli(*base, "--leakage")[0] == 0
    assert (out / "leakage.png").is_file()
    (out / "notes.png").write_bytes(b"mine")
    assert burrow_cli(*base)[0] == 0
    assert not (out / "leakage.png").exists() and (out / "notes.png").read_bytes() == b"mine"


def test_seeded_arms_average_their_sweeps() -> None:
    """A seeded RETRO arm's k sweep and memory sweep are the mean over its seeds (they were dropped, or kept
    per seed and never averaged)."""
    from types import SimpleNamespace

    from burrow.evaluate.bpb import ModelScore
    from burrow.evaluate.seeds import combine_seeds
    from burrow.evaluate.sweeps import MemorySubset

    def score(name: str, mode: str, bits: float) -> ModelScore:
        return ModelScore(name, mode, 2 if mode == "on" else None, np.array([bits]), np.array([bits]),
                          np.array([10]))

    scores = {f"r#{i} [{m.upper()}]": score(f"r#{i} [{m.upper()}]", m, b) for i, (b_off, b_on) in
              enumerate(((20.0, 18.0), (22.0, 19.0))) for m, b in (("off", b_off), ("on", b_on))}
    result = SimpleNamespace(scores=scores, seeds={}, bases={"r#0 [ON]": "r#0 [OFF]", "r#1 [ON]": "r#1 [OFF]"},
                             methods={}, leakage=None,
                             sweep_k={"r#0 [ON]": {1: 1.8, 2: 1.7}, "r#1 [ON]": {1: 2.0, 2: 1.9}},
                             sweep_memory=[MemorySubset(0.5, 1, 2, 3, {"r#0 [ON]": 1.9, "r#1 [ON]": 2.1})])
    combine_seeds(result, {"r#0": "r", "r#1": "r"})  # type: ignore[arg-type]
    assert set(result.scores) == {"r [OFF]", "r [ON]"} and result.bases == {"r [ON]": "r [OFF]"}
    assert result.sweep_k == {"r [ON]": {1: pytest.approx(1.9), 2: pytest.approx(1.8)}}
    assert result.sweep_memory[0].bpb == {"r [ON]": pytest.approx(2.0)}


def test_eval_reads_jsonl_data_by_its_text_field(setup, burrow_cli, tmp_path) -> None:
    """`burrow eval` had no --text-field or --txt-split: a JSONL set whose text sits in another field could not be
    scored (every line skipped), nor .txt data split as its memory was built."""
    memory, valid, tmp = setup
    lines = valid.read_text(encoding="utf-8").splitlines()
    data = tmp_path / "valid.jsonl"
    data.write_text("".join(json.dumps({"body": line}) + "\n" for line in lines), encoding="utf-8")
    base = ["eval", tmp / "base-run", "--memory", memory.dir, "--precision", "fp32"]
    code, _, err = burrow_cli(*base, "-d", data, "-o", tmp_path / "a")
    assert code != 0 and "--text-field" in err  # no record has the field 'text': one line naming the option
    code, out, err = burrow_cli(*base, "-d", data, "--text-field", "body", "-o", tmp_path / "b")
    assert code == 0, err
    by_field = json.loads((tmp_path / "b" / "eval.json").read_text(encoding="utf-8"))
    code, _, err = burrow_cli(*base, "-d", valid, "--txt-split", "line", "-o", tmp_path / "c")
    assert code == 0, err
    by_line = json.loads((tmp_path / "c" / "eval.json").read_text(encoding="utf-8"))
    assert by_field["data"]["documents"] == by_line["data"]["documents"] == len(lines)
    assert by_field["data"]["bytes"] == by_line["data"]["bytes"]
