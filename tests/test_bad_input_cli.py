"""Bad input found by a new user's audit (session 7), through ``burrow``'s real entry point: an output that
is an input, an output that is a file, damaged artefact files, lone surrogates, out-of-range numbers. Each
ends in one ``error:`` line (or a usage line), loses nothing, and writes nothing that looks complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import test_reliability_cli as reliability
from burrow.errors import BurrowError

# test_reliability_cli's corpus, memories and 2-step run, with its stand-in encoder (autouse)
world, hash_encoder = reliability.world, reliability.hash_encoder
M, one_error, _truncate, stage = reliability.M, reliability.one_error, reliability._truncate, reliability.stage


def test_clean_refuses_to_write_over_its_input(tmp_path, burrow_cli) -> None:
    src = tmp_path / "in.jsonl"
    rows = "".join(json.dumps({"text": f"Document {i} says the owls hunt at night in the valley."}) + "\n"
                   for i in range(5))
    src.write_text(rows, encoding="utf-8")
    code, _, err = burrow_cli("corpus", "clean", src, "-o", src)
    assert code == 2
    assert "both an input" in one_error(err)
    assert src.read_text(encoding="utf-8") == rows
    code, _, err = burrow_cli("corpus", "clean", tmp_path, "-o", tmp_path / "in.jsonl")  # the folder holds it
    assert code == 2 and src.read_text(encoding="utf-8") == rows
    for name in ("out.txt.gz", "out.txt", "out"):  # JSON lines under a name read back as plain text
        code, _, err = burrow_cli("corpus", "clean", src, "-o", tmp_path / name)
        assert code == 2 and "ending in .jsonl" in one_error(err) and not (tmp_path / name).exists(), err


def test_tokenize_refuses_the_memorys_own_token_store(world, tmp_path, burrow_cli) -> None:
    mem = tmp_path / "mem"
    shutil.copytree(world["mem_a"], mem)
    before = (mem / "tokens" / "tokens.bin").read_bytes()
    code, _, err = burrow_cli("memory", "tokenize", mem, world["valid"], "-o", mem / "tokens")
    assert code == 2
    assert "own folder or token store" in one_error(err)
    assert (mem / "tokens" / "tokens.bin").read_bytes() == before


def test_tokenize_of_empty_input_names_it_and_leaves_nothing(world, tmp_path, burrow_cli) -> None:
    """It said only "every input was empty or skipped", on the progress bar's line, and left a 0-byte
    tokens.bin in a folder it had created."""
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    code, _, err = burrow_cli("memory", "tokenize", world["mem_a"], empty, "-o", tmp_path / "tk")
    assert code == 2 and "empty.txt" in one_error(err) and "empty" in one_error(err)
    assert not (tmp_path / "tk").exists()


def test_tokenize_of_a_jsonl_without_the_text_field_leaves_nothing(world, tmp_path, burrow_cli) -> None:
    """The reader's error came mid-write: a 0-byte tokens.bin kept the new -o folder."""
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"body": "the owls hunt at night"}) + "\n", encoding="utf-8")
    code, _, err = burrow_cli("memory", "tokenize", world["mem_a"], notes, "-o", tmp_path / "tk")
    assert code == 2 and "has a 'text' field" in one_error(err)
    assert not (tmp_path / "tk").exists()


@pytest.mark.parametrize("command", ["memory build", "train", "eval", "memory tokenize"])
def test_an_output_that_is_a_file_is_refused_before_any_work(world, tmp_path, burrow_cli, command) -> None:
    afile = tmp_path / "afile"
    afile.write_text("hi\n", encoding="utf-8")
    args = {"memory build": ["memory", "build", world["small"], "--vocab-size", "400"],
            "train": ["train", "--model", world["model"], "--memory", world["mem_a"], "--steps", "1"],
            "eval": ["eval", world["run"], "--memory", world["mem_a"], "--data", world["valid"]],
            "memory tokenize": ["memory", "tokenize", world["mem_a"], world["valid"]]}[command]
    for out in (afile, afile / "sub"):
        code, _, err = burrow_cli(*args, "-o", out)
        assert code == 2
        assert f"{afile} is a file" in one_error(err)
    assert afile.read_text(encoding="utf-8") == "hi\n"


def test_memory_build_refuses_a_run_folder_as_its_output(world, tmp_path, burrow_cli) -> None:
    """`memory build CORPUS -o RUN` (the run's folder for the memory's) built a whole memory into the run,
    its footprint.json replaced; `train -o MEM` was already refused."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    before = sorted(p.name for p in run.iterdir())
    footprint = (run / "footprint.json").read_bytes() if (run / "footprint.json").exists() else None
    code, _, err = burrow_cli("memory", "build", world["small"], "--vocab-size", "400", "-o", run)
    assert code == 2
    assert f"{run} is a run or model" in one_error(err) and "give -o a new folder" in one_error(err)
    assert sorted(p.name for p in run.iterdir()) == before
    assert ((run / "footprint.json").read_bytes() if (run / "footprint.json").exists() else None) == footprint


@pytest.mark.parametrize("command", ["tasks run", "risks"])
@pytest.mark.parametrize("into", ["mem_a", "run"])
def test_tasks_and_risks_refuse_a_memory_or_a_run_as_their_output(world, tmp_path, burrow_cli, command,
                                                                    into) -> None:
    """`tasks run … -o MEM` wrote results.json, configs/, per_task/ and lm_cache/ among the memory's files (and
    `tasks report MEM` then advised it); `risks … -o RUN` its report into the run. eval, train and memory build
    already refused another artefact's folder."""
    target = tmp_path / into
    shutil.copytree(world[into], target)
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    args = {"tasks run": ["tasks", "run", world["run"], "--memory", world["mem_a"], "--tasks", "arc_easy"],
            "risks": ["risks", world["run"], "--memory", world["mem_a"], "--risks", "environmental"]}[command]
    code, _, err = burrow_cli(*args, "-o", target)
    assert code == 2 and "give -o a new folder" in one_error(err), err
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before


@pytest.mark.parametrize("name", ["index.faiss", "chunks.npz", "tokens/tokens.bin", "tokens/offsets.npy",
                                  "tokens/documents.jsonl"])
def test_a_damaged_memory_file_is_one_error_line(world, tmp_path, burrow_cli, name) -> None:
    mem = tmp_path / "mem"
    shutil.copytree(world["mem_a"], mem)
    _truncate(mem / name, 0.4)
    code, _, err = burrow_cli("memory", "search", mem, "owls hunt at night")
    assert code == 2
    line = one_error(err)
    assert Path(name).name in line and ("damaged" in line or "do not match" in line)


def test_a_damaged_neighbour_table_names_the_command_that_redoes_it(world, tmp_path, burrow_cli) -> None:
    mem = tmp_path / "mem"
    shutil.copytree(world["mem_a"], mem)
    code, _, err = burrow_cli("memory", "neighbours", mem, "-k", "2")
    assert code == 0, err
    from burrow.memory import Memory

    ids = next((mem / "neighbours").glob("self.k2.ids.npy"))
    _truncate(ids, 0.5)
    with pytest.raises(BurrowError, match="damaged.*memory neighbours"):
        Memory(mem).neighbour_table("self", 2)


def test_eval_refuses_a_model_smaller_than_the_memorys_vocabulary(world) -> None:
    from burrow.evaluate import EvalConfig, evaluate, model_entries
    from burrow.memory import Memory
    from burrow.model import build_model
    from burrow.presets import get_preset

    model = build_model(get_preset("tiny", vocab_size=100, chunk_size=int(M), d_model=32, n_layers=1, n_heads=2,
                                   head_dim=16, max_seq_len=64))
    with pytest.raises(BurrowError, match="tokenizer has 400 tokens but the model only 100"):
        evaluate(model_entries("small", model), Memory(world["mem_a"]), [str(world["valid"])],
                 EvalConfig(seq_len=64, precision="fp32"))


def test_lone_surrogates_in_jsonl_are_repaired_or_skipped(tmp_path) -> None:
    from burrow.data.corpus import CorpusConfig, CorpusStats, read_corpus

    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "Hello \\ud800 world, the owls hunt.", "title": "T\\udcff"}\n'
                   '{"text": "A clean line about bakers and ovens."}\n', encoding="utf-8")
    stats = CorpusStats()
    docs = list(read_corpus([str(src)], CorpusConfig(), stats))
    assert [d.text for d in docs] == ["Hello \ufffd world, the owls hunt.", "A clean line about bakers and ovens."]
    assert docs[0].title == "T\ufffd" and stats.repaired_utf8 == 1
    for d in docs:
        d.text.encode("utf-8")
    stats = CorpusStats()
    docs = list(read_corpus([str(src)], CorpusConfig(invalid_utf8="skip"), stats))
    assert len(docs) == 1 and stats.skipped.get("invalid_utf8", 0) == 1


@pytest.mark.parametrize("argv", [["memory", "search", "m", "q", "-k", "-1"], ["memory", "neighbours", "m", "-k", "0"],
                                  ["eval", "r", "-d", "x", "-o", "o", "-k", "0"]])
def test_out_of_range_k_is_a_usage_line(argv, burrow_cli) -> None:
    code, _, err = burrow_cli(*argv)
    assert code == 2
    assert "Traceback" not in err and "-k" in err


@pytest.mark.parametrize("argv", [["generate", "r", "q", "-m", "m", "--precision", "fp8"],
                                  ["serve", "r", "-m", "m", "--precision", "half"],
                                  ["train", "--model", "tiny", "--tokens", "t", "-o", "o", "--precision", "fp8"]])
def test_an_unknown_precision_is_a_usage_line(argv, burrow_cli) -> None:
    """generate and serve ran with --precision fp8 as if it were auto."""
    code, _, err = burrow_cli(*argv)
    assert code == 2
    assert "Traceback" not in err and "--precision" in err and "auto, bf16, fp16, fp32" in err


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01", b"[1, 2]"])
def test_a_manifest_that_is_not_a_json_object_is_one_error_line(tmp_path, burrow_cli, content) -> None:
    (tmp_path / "memory.manifest.json").write_bytes(content)
    code, _, err = burrow_cli("memory", "info", tmp_path)
    assert code == 2
    assert "memory.manifest.json" in one_error(err)


@pytest.mark.parametrize("field", [{"seed": 2**64}, {"seed": -1}, {"temperature": float("nan")}])
def test_generation_numbers_out_of_range_are_refused(field) -> None:
    from burrow.generate import GenerationConfig

    with pytest.raises(BurrowError):
        GenerationConfig(**field)


def test_a_damaged_evaluation_cache_is_recomputed(tmp_path) -> None:
    from burrow.artefacts import write_manifest
    from burrow.evaluate.retrieval import _cache_paths, _load_cached

    path, name = _cache_paths(tmp_path, "input", "abc")
    np.savez(path, keys=np.zeros((2, 4)), ids=np.zeros((2, 3)), distances=np.zeros((2, 3)))
    write_manifest(tmp_path, name)
    assert _load_cached(tmp_path, "input", "abc") is not None
    _truncate(path, 0.5)
    assert _load_cached(tmp_path, "input", "abc") is None


@pytest.mark.parametrize(("text", "field"), [('d_ffw = "wide"\n', "d_ffw"), ("max_seq_len = 64.5\n", "max_seq_len"),
                                             ("retro = 1\n", "retro")])
def test_a_model_toml_field_of_the_wrong_type_is_one_error_line(world, tmp_path, burrow_cli, text, field) -> None:
    model = tmp_path / "bad.toml"
    model.write_text(reliability.TINY_MODEL + text, encoding="utf-8")
    code, _, err = burrow_cli("train", "--model", model, "--memory", world["mem_a"], "-o", tmp_path / "run",
                              "--steps", "1", *reliability.TRAIN)
    assert code == 2
    assert field in one_error(err)
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize(("content", "said"), [(b'steps = "ten"\n', "steps must be an integer"),
                                               (b"steps = 2\n\xff\xfe\n", "not UTF-8")])
def test_a_run_config_of_the_wrong_type_or_bytes_is_one_error_line(world, tmp_path, burrow_cli, content,
                                                                   said) -> None:
    config = tmp_path / "run.toml"
    config.write_bytes(b'model = "tiny"\nout = "' + str(tmp_path / "run").encode() + b'"\n' + content)
    code, _, err = burrow_cli("train", "--config", config, "--memory", world["mem_a"])
    assert code == 2
    assert said in one_error(err)


def test_a_rerun_redoes_a_truncated_index_and_neighbour_table(world, tmp_path, burrow_cli, caplog,
                                                               monkeypatch) -> None:
    """A file cut short after its manifest was written (a disk that lied, a copy that stopped) is not "up to
    date": the same command builds it again, and the memory works."""


    mem = tmp_path / "mem"
    build = ["memory", "build", world["corpus"], "-o", mem, "--vocab-size", "400", "--chunk-size", M, "-k", "2"]
    code, _, err = burrow_cli(*build)
    assert code == 0, err
    index, ids = mem / "index.faiss", next((mem / "neighbours").glob("self.k2.ids.npy"))
    want_index, want_ids = index.read_bytes(), np.load(ids)
    _truncate(index)
    _truncate(ids)
    code, out, err = burrow_cli(*build)
    assert code == 0, err
    assert "up to date" not in stage(out, "index")
    assert index.read_bytes() == want_index
    assert np.array_equal(np.load(ids), want_ids)
    code, _, err = burrow_cli("memory", "search", mem, "owls hunt at night")
    assert code == 0, err
    # the chunk table and the token store's files likewise; they are cut again as they were, so the keys are
    # not encoded again and the index built from them is not rebuilt
    encoded: list[int] = []  # texts the (stand-in) encoder was given
    real = reliability.ENCODER.encode
    monkeypatch.setattr(reliability.ENCODER, "encode", lambda texts: encoded.append(len(texts)) or real(texts))
    for name in ("chunks.npz", "tokens/tokens.bin", "tokens/offsets.npy", "tokens/documents.jsonl"):
        want = (mem / name).read_bytes()
        _truncate(mem / name)
        caplog.clear()
        encoded.clear()
        code, out, err = burrow_cli(*build)
        assert code == 0, err
        assert not encoded, f"{name}: the keys were encoded again"
        assert "up to date" not in stage(out, name.split("/")[0].removesuffix(".npz")), name
        assert "up to date" in stage(out, "index"), f"{name}: the index was rebuilt"
        assert "damaged" in caplog.text and name.split("/")[-1] in caplog.text  # said, on stderr for a user
        assert (mem / name).read_bytes() == want, name
        code, _, err = burrow_cli("memory", "search", mem, "owls hunt at night")
        assert code == 0, err


def test_an_empty_search_query_is_one_error_line(burrow_cli, tmp_path) -> None:
    """An empty query's key is the encoder's bias alone: its "nearest" chunks were arbitrary."""
    code, _, err = burrow_cli("memory", "search", tmp_path, "  ")
    assert code == 2 and "query is empty" in one_error(err)


def test_a_missing_optional_package_is_one_line_naming_the_extra(world, burrow_cli, monkeypatch) -> None:
    """Without burrow[serve], `burrow serve` ended in fastapi's ModuleNotFoundError traceback (ray, transformers,
    datasets and the risks classifier already said which package to install)."""
    import sys

    # burrow.serve too: its lazy exports keep create_app once read, and with them the server would start
    for name in [m for m in sys.modules if m.startswith(("burrow.serve", "fastapi"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # were it imported anyway: an error, never a live server
    code, _, err = burrow_cli("serve", world["run"], "--memory", world["mem_a"], "--port", "0")
    assert code == 2 and "Traceback" not in err
    assert "needs fastapi" in one_error(err) and "pip install 'burrow[serve]'" in err


@pytest.mark.parametrize(("command", "said", "not_said"), [(["train"], "training sequence", "scored window"),
                                                          (["retrofit"], "training sequence", "scored window"),
                                                          (["eval"], "scored window", "training")])
def test_seq_len_help_says_what_it_means_for_that_command(burrow_cli, command, said, not_said) -> None:
    """--seq-len's help held both meanings: `eval --help` began "(training; default 512)"."""
    code, out, _ = burrow_cli(*command, "--help")
    help_text = " ".join(out.split()).replace("│ ", "")
    start = help_text.index("--seq-len")
    entry = help_text[start:help_text.index("--", start + 10)]
    assert code == 0 and said in entry and not_said not in entry, entry


def test_memory_builds_precision_lists_only_what_the_encoder_takes(tmp_path, burrow_cli) -> None:
    """`memory build --help` listed fp16, which EncoderConfig refuses; every value it lists is now taken."""
    from burrow.cli.options import ENCODER_PRECISIONS
    from burrow.memory.config import EncoderConfig

    code, out, _ = burrow_cli("memory", "build", "--help")
    assert code == 0 and "fp16" not in out
    for value in ENCODER_PRECISIONS:
        EncoderConfig(precision=value)
    code, _, err = burrow_cli("memory", "build", tmp_path, "-o", tmp_path / "m", "--precision", "fp16")
    assert code == 2 and "'fp16' is not one of auto, bf16, fp32" in err


def test_memory_build_takes_a_device_and_refuses_an_unusable_one_first(tmp_path, burrow_cli) -> None:
    """`memory build` had no --device (every other compute command has one): a GPU host always encoded on CUDA."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("Owls hunt at night.\n", encoding="utf-8")
    code, _, err = burrow_cli("memory", "build", corpus, "-o", tmp_path / "m", "--device", "nosuch")
    assert code == 2 and "unknown device 'nosuch'" in one_error(err)
    assert not (tmp_path / "m").exists()


def test_a_missing_module_inside_an_installed_package_is_not_called_a_missing_extra() -> None:
    """"needs lm_eval, which is not installed" for lm_eval.tasks.x (a module missing inside an installed
    package: a bug or a broken install, whose traceback the user needs)."""
    from burrow.cli import _missing_extra

    assert _missing_extra(ModuleNotFoundError("x", name="lm_eval.tasks.nosuch")) is None
    assert _missing_extra(ModuleNotFoundError("x", name="nosuchpackage")) is None
