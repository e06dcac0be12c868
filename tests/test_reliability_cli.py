"""What a hostile but fair new user breaks (issue 15), through ``burrow``'s real entry point.

Each case must end the way the rest of burrow does: one ``error:`` line naming the problem and the
fix, a non-zero exit (130 for an interrupt), no traceback, nothing finished deleted, no half-written
artefact that looks complete; and a re-run of the same command recovers. docs/reliability.md maps
each guarantee to its test here.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from burrow.artefacts import read_json
from burrow.data.tokenizer import TokenizerConfig
from burrow.memory import Memory
from burrow.memory.build import MemoryConfig, build_memory
from burrow.memory.encode import EncoderConfig

TRAIN = ["--seq-len", "32", "--batch-size", "2", "--eval-every", "0", "--precision", "fp32", "--no-progress"]
TINY_MODEL = 'preset = "tiny"\nd_model = 32\nn_layers = 2\nn_heads = 2\nhead_dim = 16\nchunk_size = 8\n'




def one_error(err: str) -> str:
    """The single ``error:`` line of ``err`` (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


M = "32"  # tokens per chunk: few chunks to encode (about 60 for the corpus), still 4 key shards of 16


def memory_config(vocab_size: int = 400) -> MemoryConfig:
    return MemoryConfig(tokenizer=TokenizerConfig(vocab_size=vocab_size), encoder=EncoderConfig(shard_size=16),
                        chunk_size=int(M))


class HashEncoder:
    """A stand-in for the frozen encoder: 16-dim keys drawn from a hash of each text. What is tested here is
    how burrow keeps its artefacts, not what the keys mean, and this costs nothing to run."""

    config = EncoderConfig(shard_size=16)
    dim = 16
    dtype = None

    def fingerprint(self) -> str:
        return "hash-encoder"

    def earlier_fingerprint(self) -> str:  # FrozenEncoder's: what an earlier burrow recorded for these weights
        return "hash-encoder-4mib"

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(zlib.crc32(t.encode("utf-8", "surrogatepass"))).standard_normal(self.dim)
                for t in texts]
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)


ENCODER = HashEncoder()


@pytest.fixture(autouse=True)
def hash_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands get the stand-in encoder instead of loading the real one."""
    import burrow.memory.build
    import burrow.memory.encode

    monkeypatch.setattr(burrow.memory.build, "FrozenEncoder", lambda config: ENCODER)
    monkeypatch.setattr(burrow.memory.encode, "FrozenEncoder", lambda config: ENCODER)  # Memory.encoder's import


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, make_corpus) -> dict[str, Path]:
    """A corpus, two memories with different tokenizers of one size, and a finished 2-step baseline run on memory A."""
    import torch

    from burrow.train import TrainConfig, train

    root = tmp_path_factory.mktemp("reliability")
    corpus = make_corpus(root / "corpus")
    small = make_corpus(root / "small", repeats=2)  # for builds from scratch: fewer keys to encode
    build_memory([str(corpus)], root / "mem_a", memory_config(400), progress=False, encoder=ENCODER)
    other = root / "other"  # the same vocabulary size, trained on other text: another tokenizer
    other.mkdir()
    (other / "notes.txt").write_text("".join(f"Note {i}: the river floods the valley and owls hunt at night.\n"
                                             for i in range(40)), encoding="utf-8")
    build_memory([str(other)], root / "mem_b", memory_config(400), progress=False, encoder=ENCODER)
    (root / "tiny.toml").write_text(TINY_MODEL, encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(model=str(root / "tiny.toml"), out=root / "run", tokens=root / "mem_a" / "tokens",
                          steps=2, seq_len=32, batch_size=2, eval_every=0, precision="fp32", progress=False))
    finally:
        torch.set_num_threads(threads)
    (root / "valid.txt").write_text("Bakers knead the dough and bake loaves in hot ovens.\n", encoding="utf-8")
    return {"root": root, "corpus": corpus, "small": small, "mem_a": root / "mem_a", "mem_b": root / "mem_b",
            "run": root / "run", "model": root / "tiny.toml", "valid": root / "valid.txt"}


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_copy(world: dict[str, Path], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    return run


def stage(out: str, name: str) -> str:
    """The line of ``memory build``'s table for stage ``name``."""
    return next(line for line in out.splitlines() if line.split()[:1] == [name])


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# 1. Ctrl-C exits 130 with a message; the same command resumes.


def test_interrupted_memory_build_exits_130_and_resumes(world, tmp_path, monkeypatch, burrow_cli) -> None:
    import burrow.memory.build

    real = burrow.memory.build.encode_sharded

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(burrow.memory.build, "encode_sharded", interrupted)
    args = ["memory", "build", world["small"], "-o", tmp_path / "mem", "--vocab-size", "400", "--chunk-size", M]
    code, _, err = burrow_cli(*args)
    assert code == 130
    assert "interrupted; re-run the same command to resume" in err
    assert not (tmp_path / "mem" / "memory.manifest.json").exists()
    monkeypatch.setattr(burrow.memory.build, "encode_sharded", real)
    code, out, err = burrow_cli(*args)
    assert code == 0, err
    assert "up to date" in stage(out, "tokenizer") and "up to date" in stage(out, "tokens")  # finished stages kept


def test_interrupted_training_exits_130_and_resumes(world, tmp_path, monkeypatch, burrow_cli, one_thread) -> None:
    import burrow.train.loop

    real = burrow.train.loop.train_step
    calls = {"n": 0}

    def dies_at_step_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(burrow.train.loop, "train_step", dies_at_step_2)
    args = ["train", "--model", world["model"], "--tokens", world["mem_a"] / "tokens", "-o", tmp_path / "run",
            "--steps", "3", "--checkpoint-every", "1", *TRAIN]
    code, _, err = burrow_cli(*args)
    assert code == 130
    assert "interrupted; re-run the same command to resume" in err
    assert not (tmp_path / "run" / "train.manifest.json").exists()
    monkeypatch.setattr(burrow.train.loop, "train_step", real)
    code, out, err = burrow_cli(*args)
    assert code == 0, err
    assert "resumed from step 1" in out


# 2. eval and generate refuse a memory built with another tokenizer than the model was trained with.


def test_generate_refuses_a_memory_of_another_tokenizer(world, burrow_cli, one_thread) -> None:
    code, _, err = burrow_cli("generate", world["run"], "Bread is", "--memory", world["mem_b"],
                              "--max-tokens", "4", "--precision", "fp32")
    assert code == 2
    assert "tokenizer" in one_error(err)
    code, _, err = burrow_cli("generate", world["run"], "Bread is", "--memory", world["mem_a"],
                              "--max-tokens", "4", "--precision", "fp32")
    assert code == 0, err


def test_eval_refuses_a_memory_of_another_tokenizer(world, tmp_path, burrow_cli, one_thread) -> None:
    code, _, err = burrow_cli("eval", world["run"], "--memory", world["mem_b"], "--data",
                              world["valid"], "-o", tmp_path / "eval", "--precision", "fp32")
    assert code == 2
    assert "tokenizer" in one_error(err)


# 3. A deleted (or truncated) key shard: detected when the memory is opened and redone by a re-run.


def test_a_deleted_key_shard_is_detected_and_rebuilt(world, tmp_path, burrow_cli) -> None:
    mem = tmp_path / "mem"
    shutil.copytree(world["mem_a"], mem)
    shard = mem / "embeddings" / "shard_00001.npy"
    want = np.load(shard)
    shard.unlink()
    code, _, err = burrow_cli("memory", "info", mem)
    assert code == 2
    assert "shard_00001.npy" in one_error(err)
    build = ["memory", "build", world["corpus"], "-o", mem, "--vocab-size", "400", "--chunk-size", M]
    # another index first: it must re-encode the missing shard, not crash or lose the memory
    code, out, err = burrow_cli(*build, "--index", "HNSW32")
    assert code == 0, err
    assert np.array_equal(np.load(shard), want)
    _truncate(shard)
    code, out, err = burrow_cli(*build)
    assert code == 0, err
    assert "up to date" not in stage(out, "embeddings")
    assert np.array_equal(np.load(shard), want)
    assert len(Memory(mem)) == read_json(mem / "memory.manifest.json")["n_chunks"]


# 4. A truncated model.safetensors: one error line in generate and eval; resume falls back a checkpoint.


def test_truncated_weights_are_one_error_line(world, tmp_path, burrow_cli, one_thread) -> None:
    run = _run_copy(world, tmp_path)
    _truncate(run / "final" / "model.safetensors")
    code, _, err = burrow_cli("generate", run, "Bread is", "--memory", world["mem_a"],
                              "--max-tokens", "4")
    assert code == 2
    assert "model.safetensors" in one_error(err)
    code, _, err = burrow_cli("eval", run, "--memory", world["mem_a"], "--data", world["valid"],
                              "-o", tmp_path / "eval")
    assert code == 2
    assert "model.safetensors" in one_error(err)


def test_corrupt_final_config_does_not_advise_retraining(world, tmp_path, burrow_cli) -> None:
    run = _run_copy(world, tmp_path)
    (run / "final" / "config.json").write_text('{"d_model": 3', encoding="utf-8")
    code, _, err = burrow_cli("generate", run, "Bread is", "--memory", world["mem_a"])
    assert code == 2
    line = one_error(err)
    assert "config.json" in line and "--force" not in line and "checkpoint" in line


def test_resume_falls_back_past_a_truncated_checkpoint(world, tmp_path, monkeypatch, burrow_cli, one_thread) -> None:
    import burrow.train.loop

    real = burrow.train.loop.train_step
    calls = {"n": 0}

    def dies_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(burrow.train.loop, "train_step", dies_at_step_4)
    args = ["train", "--model", world["model"], "--tokens", world["mem_a"] / "tokens", "-o", tmp_path / "run",
            "--steps", "4", "--checkpoint-every", "1", "--keep-checkpoints", "3", *TRAIN]
    assert burrow_cli(*args)[0] == 130
    monkeypatch.setattr(burrow.train.loop, "train_step", real)
    _truncate(tmp_path / "run" / "checkpoints" / "step_000003" / "model.safetensors")
    with open(tmp_path / "run" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 4, "lo')  # a line cut short by the crash
    code, _, err = burrow_cli("generate", tmp_path / "run", "Bread is", "--memory", world["mem_a"],
                              "--max-tokens", "2", "--precision", "fp32")
    assert code == 0, err  # the unfinished run's newest intact checkpoint generates
    code, out, err = burrow_cli(*args)
    assert code == 0, err
    assert "resumed from step 2" in out
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# 5. Non-UTF-8 bytes piped into chat.


@pytest.mark.parametrize("errors", ["surrogateescape", "strict"])  # a C locale's stdin, a UTF-8 locale's
def test_chat_survives_non_utf8_input(world, tmp_path, monkeypatch, burrow_cli, one_thread, errors) -> None:
    import dataclasses

    from burrow.model import build_model, load_run, save_model

    trained = load_run(world["run"])  # its 32-token context holds no chat preamble: the same model, longer
    model = save_model(build_model(dataclasses.replace(trained.config, max_seq_len=1024)), tmp_path / "model")
    raw = b"caf\xe9 au lait \xff\xfe\nBread?\n/quit\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors=errors))
    code, out, err = burrow_cli("chat", model, "--memory", world["mem_a"],
                                "--max-tokens", "4", "--seed", "0", "--precision", "fp32")
    assert code == 0, err
    assert "Traceback" not in err
    assert out.count("Burrow:") == 2 and "error" not in out  # both messages answered (not an error each)


# 6. A corpus that yields no documents: one error line (and no empty output folder left behind).


def _no_docs_corpora(root: Path) -> dict[str, Path]:
    root.mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_text("   \n\n\t\n", encoding="utf-8")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 64)
    good = gzip.compress(b'{"text": "a line of text that is long enough to be a document"}\n' * 50)
    (root / "cut.jsonl.gz").write_bytes(good[:12])  # truncated inside the gzip header: nothing readable
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize("name", ["empty.txt", "blank.txt", "binary.txt", "cut.jsonl.gz"])
def test_build_with_a_given_tokenizer_on_a_corpus_without_documents(world, tmp_path, burrow_cli,
                                                                   name) -> None:
    corpus = _no_docs_corpora(tmp_path / "in")[name]
    out = tmp_path / "new" / "mem"
    code, _, err = burrow_cli("memory", "build", corpus, "-o", out, "--tokenizer",
                              world["mem_a"] / "tokenizer.model", "--chunk-size", M)
    assert code == 2
    assert "no documents" in one_error(err)
    assert not (tmp_path / "new").exists()  # the failed command leaves no empty folders behind


def test_binary_only_corpus_says_binary_not_too_small(tmp_path, burrow_cli) -> None:
    corpus = _no_docs_corpora(tmp_path / "in")["binary.txt"]
    code, _, err = burrow_cli("memory", "build", corpus, "-o", tmp_path / "mem")
    assert code == 2
    line = one_error(err)
    assert "binary" in line and "too small" not in line
    assert not (tmp_path / "mem").exists()


def test_a_tokenizer_smaller_than_asked_is_reported(world, tmp_path, caplog) -> None:
    from burrow.data.corpus import read_corpus
    from burrow.data.tokenizer import train_tokenizer

    texts = (d.text for d in read_corpus([world["corpus"]]))
    tok = train_tokenizer(texts, tmp_path, TokenizerConfig(vocab_size=6000))
    assert tok.vocab_size < 6000
    assert any(f"{tok.vocab_size} pieces" in r.getMessage() and "6000" in r.getMessage() for r in caplog.records)


# 7. corpus clean: an unreadable --against, or inputs that yield nothing, are errors, not exit 0.


def test_clean_with_an_unreadable_against_set_is_an_error(world, tmp_path, burrow_cli) -> None:
    bad = _no_docs_corpora(tmp_path / "in")["cut.jsonl.gz"]
    out = tmp_path / "clean.jsonl"
    code, _, err = burrow_cli("corpus", "clean", world["corpus"], "-o", out, "--against", bad)
    assert code == 2
    assert str(bad.name) in one_error(err)
    assert not out.exists()


@pytest.mark.parametrize("name", ["empty.txt", "binary.txt"])
def test_clean_of_inputs_that_yield_nothing_is_an_error(tmp_path, burrow_cli, name) -> None:
    corpus = _no_docs_corpora(tmp_path / "in")[name]
    out = tmp_path / "clean.jsonl"
    code, stdout, err = burrow_cli("corpus", "clean", corpus, "-o", out)
    assert code == 2
    assert "no documents" in one_error(err)
    assert not out.exists() and "kept 0 of 0" not in stdout


# 8. A truncated .jsonl.gz mixed with good inputs: its readable lines are kept, and the build says so.


def test_build_keeps_the_readable_lines_of_a_truncated_gzip(world, tmp_path, burrow_cli) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(world["small"], corpus)
    lines = [json.dumps({"text": f"Line {i}: owls hunt at night and glaciers carve deep valleys."})
             for i in range(80)]
    packed = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    (corpus / "more.jsonl.gz").write_bytes(packed[: len(packed) * 3 // 4])
    code, out, err = burrow_cli("memory", "build", corpus, "-o", tmp_path / "mem",
                                "--vocab-size", "400", "--chunk-size", M)
    assert code == 0, err
    n_docs = read_json(tmp_path / "mem" / "memory.manifest.json")["n_docs"]
    assert n_docs > 6 + 40  # the six .txt documents and most of the truncated file's lines
    assert "truncated" in out + err and "more.jsonl.gz" in out + err


# 9. A full disk: one error line; nothing half-written looks complete; a re-run recovers.


def test_disk_full_while_encoding_keys(world, tmp_path, monkeypatch, burrow_cli) -> None:
    real = np.save

    def full(file, arr, *args, **kwargs):
        if "shard_00001" in str(getattr(file, "name", file)):
            file.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    args = ["memory", "build", world["small"], "-o", tmp_path / "mem", "--vocab-size", "400", "--chunk-size", M]
    code, _, err = burrow_cli(*args)
    assert code != 0
    assert "no space left on device" in one_error(err).lower()
    assert not (tmp_path / "mem" / "embeddings.manifest.json").exists()
    assert not list((tmp_path / "mem").rglob("*.tmp"))
    assert sorted(p.name for p in (tmp_path / "mem" / "embeddings").glob("shard_*")) == ["shard_00000.npy"]
    monkeypatch.setattr(np, "save", real)
    code, out, err = burrow_cli(*args)
    assert code == 0, err
    assert "up to date" in stage(out, "tokens")  # finished stages were kept


def test_disk_full_while_writing_the_index(world, tmp_path, monkeypatch, burrow_cli) -> None:
    import faiss

    def full(index, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError(f"Error in FileIOWriter: fwrite failed for {path}: No space left on device")

    real = faiss.write_index
    monkeypatch.setattr(faiss, "write_index", full)
    args = ["memory", "build", world["small"], "-o", tmp_path / "mem", "--vocab-size", "400", "--chunk-size", M]
    code, _, err = burrow_cli(*args)
    assert code != 0
    assert "no space left on device" in one_error(err).lower()
    assert not (tmp_path / "mem" / "index.faiss").exists() and not list((tmp_path / "mem").rglob("*.tmp"))
    assert not (tmp_path / "mem" / "memory.manifest.json").exists()
    monkeypatch.setattr(faiss, "write_index", real)
    code, out, err = burrow_cli(*args)
    assert code == 0, err


def test_disk_full_while_saving_a_checkpoint(world, tmp_path, monkeypatch, burrow_cli, one_thread) -> None:
    import safetensors.torch

    real = safetensors.torch.save_model
    calls = {"n": 0}

    def full_on_second(model, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filename).write_bytes(b"partial")
            from safetensors import SafetensorError

            raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
        return real(model, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", full_on_second)
    args = ["train", "--model", world["model"], "--tokens", world["mem_a"] / "tokens", "-o", tmp_path / "run",
            "--steps", "3", "--checkpoint-every", "1", *TRAIN]
    code, _, err = burrow_cli(*args)
    assert code != 0
    assert "no space left on device" in one_error(err).lower()
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step_000001"]  # the failed write left no half checkpoint behind
    monkeypatch.setattr(safetensors.torch, "save_model", real)
    code, out, err = burrow_cli(*args)
    assert code == 0, err
    assert "resumed from step 1" in out


def test_disk_full_while_saving_training_state(world, tmp_path, monkeypatch, burrow_cli, one_thread) -> None:
    import shutil as shutil_module

    import torch

    real_save, real_usage = torch.save, shutil_module.disk_usage

    def full(obj, f, *args, **kwargs):  # what torch says when the disk fills: no errno, no "space"
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: real_usage(path)._replace(free=4096))
    args = ["train", "--model", world["model"], "--tokens", world["mem_a"] / "tokens", "-o", tmp_path / "run",
            "--steps", "2", "--checkpoint-every", "1", *TRAIN]
    code, _, err = burrow_cli(*args)
    assert code == 1
    assert "no space left on device" in one_error(err).lower()
    assert not list((tmp_path / "run" / "checkpoints").iterdir())
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(shutil_module, "disk_usage", real_usage)
    code, out, err = burrow_cli(*args)
    assert code == 0, err


@pytest.mark.parametrize("device", ["cuda:99", "banana"])
def test_an_unusable_device_is_one_line_and_training_writes_nothing(world, tmp_path, burrow_cli, device) -> None:
    """`--device cuda` on a CPU-only torch, a GPU index past the last, a typo: one `error:` line (it was a
    torch traceback in every command), and training leaves no run directory (it wrote config.json)."""
    from burrow.device import pick_device
    from burrow.errors import BurrowError

    with pytest.raises(BurrowError, match="device"):
        pick_device(device)
    for args in (["train", "--model", world["model"], "--tokens", world["mem_a"] / "tokens", "-o", tmp_path / "run",
                  "--steps", "1", "--device", device, *TRAIN],
                 ["generate", world["run"], "Owls", "-m", world["mem_a"], "--max-tokens", "2", "--device", device],
                 ["eval", world["run"], "-m", world["mem_a"], "-d", world["valid"], "-o", tmp_path / "ev",
                  "--seq-len", "64", "--device", device]):
        code, _, err = burrow_cli(*args)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (args[0], err)
        assert "device" in err and "use " in err, err
    assert not (tmp_path / "run").exists()
