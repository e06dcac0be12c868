"""Tokenizer round trip and the token store: dtype, provenance, append, and crash safety."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from burrow.data.corpus import CorpusConfig, Document, read_corpus
from burrow.data.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from burrow.data.tokens import TokenStore, write_token_store
from burrow.errors import BurrowError


@pytest.fixture
def tok(tiny_corpus: Path, tmp_path: Path):
    texts = [d.text for d in read_corpus([tiny_corpus])]
    return train_tokenizer(texts, tmp_path / "tok", TokenizerConfig(vocab_size=400))


def test_default_tokenizer_round_trips_exactly(tok) -> None:
    text = "  Two  spaces,\ttabs\n\nnewlines, ünïcödé — €5 and 日本語 and emoji 🦀 \r\n end "
    assert tok.decode(tok.encode(text)) == text
    assert load_tokenizer(str(tok.path)).encode(text) == tok.encode(text)


def test_decode_takes_any_sequence_of_ids_and_drops_padding(tok) -> None:
    import numpy as np
    import torch

    ids = tok.encode("Owls hunt at night.")
    want = tok.decode(ids)
    padded = [tok.pad_id, *ids[:2], tok.pad_id, *ids[2:], tok.pad_id]
    for form in (padded, tuple(padded), np.asarray(padded), np.asarray(padded, dtype=np.uint16),
                 torch.tensor(padded), [np.int64(i) for i in padded], [float(i) for i in padded]):
        assert tok.decode(form) == want, type(form)
    assert tok.decode([]) == "" and tok.decode([tok.pad_id]) == ""


def test_token_store_layout_and_provenance(tok, tiny_corpus: Path, tmp_path: Path) -> None:
    docs = list(read_corpus([tiny_corpus], CorpusConfig()))
    store = write_token_store(tmp_path / "store", docs, tok)
    assert store.dtype == np.uint16 and store.n_docs == len(docs)
    for i, d in enumerate(docs):
        assert tok.decode(store.document(i)) == d.text
        assert store.docs[i].id == d.id and store.docs[i].bytes == len(d.text.encode())
    assert store.manifest["bytes"] == sum(len(d.text.encode()) for d in docs)


def test_append_and_killed_append_leftovers_are_ignored(tok, tmp_path: Path) -> None:
    a = [Document("a", "the cat sat on the mat", "a.txt:line 1")]
    b = [Document("b", "a comet returns every year", "b.txt:line 1")]
    store = write_token_store(tmp_path / "s", a, tok)
    n = store.n_tokens
    with open(tmp_path / "s" / "tokens.bin", "ab") as f:  # a killed append left junk past the manifest
        f.write(b"\xff\xff" * 50)
    assert TokenStore(tmp_path / "s").n_tokens == n
    store = write_token_store(tmp_path / "s", b, tok, append=True)
    assert store.n_docs == 2 and tok.decode(store.document(1)) == "a comet returns every year"
    assert tok.decode(store.document(0)) == "the cat sat on the mat"


def test_store_of_another_tokenizer_is_rejected(tok, tiny_corpus: Path, tmp_path: Path) -> None:
    other = train_tokenizer([d.text for d in read_corpus([tiny_corpus])] * 2, tmp_path / "o",
                            TokenizerConfig(vocab_size=420))
    store = write_token_store(tmp_path / "s", [Document("a", "words here", "x")], tok)
    with pytest.raises(BurrowError, match="tokenized with tokenizer"):
        store.check_tokenizer(other)
    with pytest.raises(BurrowError, match="another tokenizer; cannot append"):
        write_token_store(tmp_path / "s", [Document("b", "more", "y")], other, append=True)


def test_empty_corpus_is_an_error(tok, tmp_path: Path) -> None:
    with pytest.raises(BurrowError, match="no documents"):
        write_token_store(tmp_path / "s", [], tok)


def test_a_converted_hugging_face_tokenizer_leaves_no_temporary_folder(tmp_path) -> None:
    """A tokenizer loaded through AutoTokenizer (a hub name, smollm2's GGUF) is converted to a tokenizer.json in
    a temporary folder, held while the process lives and gone when it exits (one was left per load)."""
    import os
    import subprocess
    import sys

    code = """
import glob, sys, tempfile, types
from tokenizers import Tokenizer, models
fast = types.SimpleNamespace(is_fast=True, backend_tokenizer=Tokenizer(models.WordLevel({"a": 0, "<pad>": 1}, "a")))
sys.modules["transformers"] = types.SimpleNamespace(AutoTokenizer=types.SimpleNamespace(
    from_pretrained=lambda name, **kw: fast))
from burrow.data.tokenizer import load_tokenizer
tok = load_tokenizer("hf:some/model")
print(tok.vocab_size, tok.pad_id, len(glob.glob(tempfile.gettempdir() + "/burrow-tok-*")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1", "1"]  # its file is there while the process lives
    assert not list(tmp_path.glob("burrow-tok-*"))


def test_a_llama3_style_tokenizer_gets_its_end_token_as_pad_not_id_0(tmp_path) -> None:
    """A tokenizer.json whose end token is Llama 3's <|end_of_text|>: pad and eos are that token; the pad fell
    back to id 0, a real token, which every decode then dropped."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    from burrow.data.tokenizer import load_tokenizer

    vocab = {"!": 0, "hi": 1, "there": 2}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token="hi"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|end_of_text|>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(str(tmp_path / "tokenizer.json"))
    end = tok.token_to_id("<|end_of_text|>")
    assert loaded.eos_id == end and loaded.pad_id == end
    assert "!" in loaded.decode(loaded.encode("hi ! there !"))


def test_the_tokenizer_sample_stops_at_its_budget_inside_one_document() -> None:
    """sample_bytes was checked only between documents: a corpus of one large document (a plain .txt file
    read whole) gave the trainer all of it."""
    from burrow.data.tokenizer import _sample_lines

    big = "a line of text here\n" * 10_000
    lines = _sample_lines([big, big], 1000)
    assert 1000 <= sum(len(ln.encode()) for ln in lines) < 1000 + 20
    assert _sample_lines(["é\n" * 10], 6) == ["é\n"] * 2  # bytes, not characters


def test_a_tokenizer_trains_on_long_lines_of_cjk_text(tmp_path: Path) -> None:
    """Lines were cut to 16,000 characters, but the trainer's limit is bytes: one-line documents of Chinese
    text (3 bytes a character) were all dropped and training failed, telling the user to shrink --vocab-size."""
    import random

    rng = random.Random(0)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 100)]
    docs = ["".join(rng.choice(chars) for _ in range(6000)) for _ in range(12)]
    tok = train_tokenizer(docs, tmp_path / "tok", TokenizerConfig(vocab_size=400))
    assert tok.roundtrips(docs[0]) and len(tok.encode(docs[0])) < len(docs[0])
