"""In-context retrieval scoring: every token once, causal retrieval, pairing with the control, HF path."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from burrow.errors import BurrowError
from burrow.evaluate.data import from_texts
from burrow.evaluate.incontext import (
    BurrowLM,
    InContextConfig,
    char_to_byte_offsets,
    document_bits,
    incontext_scores,
    load_hf_lm,
    score_incontext,
)
from burrow.memory import Memory
from burrow.memory.bm25 import build_bm25
from burrow.memory.build import build_memory
from burrow.model import build_model
from burrow.presets import get_preset

CFG = dict(stride=8, query_tokens=8, device="cpu", precision="fp32", max_context=48, batch_tokens=512)
TEXT = ("A volcano is a rupture in the crust of a planet where lava, ash and gases escape. Mount Etna in "
        "Sicily is one of the most active volcanoes in Europe. Cats purr when content and sleep all day.")


@pytest.fixture(scope="module")
def memory(tmp_path_factory, make_corpus, encoder) -> Memory:
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig
    from burrow.memory.encode import EncoderConfig

    root = tmp_path_factory.mktemp("incontext")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=16), chunk_size=8)
    mem, _ = build_memory([str(make_corpus(root / "corpus"))], root / "mem", config, progress=False, encoder=encoder)
    build_bm25(mem, progress=False)
    return mem


@pytest.fixture(scope="module")
def tiny_lm(memory: Memory) -> BurrowLM:
    torch.manual_seed(0)
    model = build_model(get_preset("tiny", vocab_size=memory.tokenizer.vocab_size, chunk_size=8, retrieved_len=16,
                                   max_seq_len=64, d_model=64, n_layers=2, n_heads=2))
    return BurrowLM(model, memory.tokenizer, name="tiny")


class UniformModel(torch.nn.Module):
    """Logits all zero: every token costs exactly log2(V) bits, whatever the window."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(max_seq_len=64)
        self.vocab = vocab

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*tokens.shape, self.vocab)


def test_every_token_scored_once_uniform_lm(memory: Memory) -> None:
    texts = [TEXT, "Bread is baked from flour. " * 9, "é"]
    data = from_texts(["a", "b", "c"], texts, memory.tokenizer, 8)
    lm = BurrowLM(UniformModel(500), memory.tokenizer)
    n_tokens = sum(len(memory.tokenizer.encode(t)) for t in texts)
    for score in incontext_scores(lm, data, memory, InContextConfig(**CFG)):
        assert score.bpb == pytest.approx(n_tokens * math.log2(500) / data.n_bytes, rel=1e-6)
        assert len(score.chunk_bits) == len(data.chunk_bytes)
        assert score.chunk_bits.sum() == pytest.approx(score.doc_bits.sum(), rel=1e-9)
        for d in range(data.n_docs):  # each document's chunks hold its bits
            rows = slice(data.chunk_offsets[d], data.chunk_offsets[d + 1])
            assert score.chunk_bits[rows].sum() == pytest.approx(score.doc_bits[d], rel=1e-9)
    control, method = incontext_scores(lm, data, memory, InContextConfig(**CFG))
    assert (control.mode, method.mode, method.k) == ("windows", "incontext", None)


def test_retrieval_never_reads_the_scored_tokens_or_later(memory: Memory, tiny_lm: BurrowLM, monkeypatch) -> None:
    queries: list[str] = []
    search = Memory.search

    def spy(self, q, *a, **kw):
        queries.extend(q)
        return search(self, q, *a, **kw)

    monkeypatch.setattr(Memory, "search", spy)
    cfg = InContextConfig(**CFG)
    later = TEXT.replace("Cats purr when content", "Bakers knead the dough")
    a, b = (document_bits(tiny_lm, [t], ["x"], memory, cfg)[0] for t in (TEXT, later))
    first_diff = int(np.flatnonzero(a.ids[: len(b.ids)] != b.ids[: len(a.ids)])[0])
    assert first_diff > 3 * cfg.stride
    np.testing.assert_allclose(a.bits[:first_diff], b.bits[:first_diff], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a.bits[first_diff:], b.bits[first_diff : len(a.bits)], atol=1e-3)
    # each query is the text of the q tokens just before its block
    want = [tiny_lm.decode(a.ids[t - 8 : t].tolist()) for t in range(8, len(a.ids), 8)]
    assert queries[: len(want)] == want
    # and retrieval changed the context: bits differ from the control after the first block
    control = document_bits(tiny_lm, [TEXT], ["x"], None, cfg)[0]
    np.testing.assert_allclose(control.bits[:8], a.bits[:8], rtol=1e-5)
    assert not np.allclose(control.bits[8:], a.bits[8:], atol=1e-3)


def test_control_is_plain_sliding_window_scoring(memory: Memory, tiny_lm: BurrowLM) -> None:
    cfg = InContextConfig(**{**CFG, "max_context": 20})
    got = document_bits(tiny_lm, [TEXT], ["x"], None, cfg)[0]
    z = torch.tensor([tiny_lm.start_id, *got.ids.tolist()])
    want = []
    with torch.no_grad():
        for j in range(len(got.ids)):  # token j is in block t; the window is the last ≤ 20 inputs up to its end
            t = j // 8 * 8
            e = min(t + 8, len(got.ids))
            a = max(0, e - 20)
            logp = tiny_lm.module(z[None, a:e])[0].log_softmax(-1)
            want.append(-logp[j - a, z[j + 1]].item() / math.log(2))
    np.testing.assert_allclose(got.bits, want, rtol=1e-5, atol=1e-6)
    # a document shorter than the context: one forward over [start] + d
    short = document_bits(tiny_lm, ["Cats purr."], ["y"], None, cfg)[0]
    zs = torch.tensor([tiny_lm.start_id, *short.ids.tolist()])
    with torch.no_grad():
        lp = tiny_lm.module(zs[None, :-1])[0].log_softmax(-1).gather(-1, zs[1:, None])[:, 0]
    np.testing.assert_allclose(short.bits, (-lp / math.log(2)).numpy(), rtol=1e-5)


def test_same_document_is_excluded(memory: Memory, tiny_lm: BurrowLM, monkeypatch) -> None:
    volcano = next(i for i, d in enumerate(memory.store.docs) if "volcano" in d.source)
    seen = []
    search = Memory.search

    def spy(self, q, k=2, exclude_docs=None, **kw):
        res = search(self, q, k, exclude_docs, **kw)
        seen.append((exclude_docs, res.ids))
        return res

    monkeypatch.setattr(Memory, "search", spy)
    doc = memory.store.docs[volcano]
    document_bits(tiny_lm, [TEXT], [doc.id], memory, InContextConfig(**CFG), doc_bytes=[doc.bytes])
    exclude, ids = seen[0]
    assert (exclude == volcano).all()
    assert (memory.chunks.docs[ids[ids >= 0]] != volcano).all()
    # Another document under the same id (another file of the same name elsewhere) is not the memory's one.
    seen.clear()
    document_bits(tiny_lm, [TEXT], [doc.id], memory, InContextConfig(**CFG))  # its bytes: TEXT's, not the doc's
    assert len(TEXT.encode()) != doc.bytes and (seen[0][0] == -1).all()


def test_config_is_validated() -> None:
    for bad in ({"stride": 0}, {"retriever": "tfidf"}, {"max_context": 8, "stride": 8}, {"precision": "x"},
                {"n_passages": 0}, {"max_docs": 0}):
        with pytest.raises(BurrowError):
            InContextConfig(**bad)
    assert InContextConfig(retriever="dense").query_len == 64 and InContextConfig().query_len == 32


def test_char_to_byte_offsets() -> None:
    assert char_to_byte_offsets("aé😀b", np.array([1, 2, 3, 4])).tolist() == [1, 3, 7, 8]


def test_hf_llama_from_a_local_folder_with_dense_retrieval(memory: Memory, tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator([TEXT, TEXT.upper(), "Cats purr. Grüße"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=64))
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    lm = load_hf_lm(str(tmp_path / "llama"))
    assert lm.start_id == tok.bos_token_id and lm.max_length == 64
    text = TEXT + " Grüße — ünïcode."
    ids, ends = lm.encode_with_offsets(text)
    assert ends[-1] == len(text.encode()) and (np.diff(ends) >= 0).all()
    data = from_texts(["v"], [text], memory.tokenizer, 8)
    cfg = InContextConfig(**{**CFG, "retriever": "dense"})
    control, method = incontext_scores(lm, data, memory, cfg)
    assert control.chunk_bits.sum() == pytest.approx(control.doc_bits.sum())
    assert method.chunk_bits.sum() == pytest.approx(method.doc_bits.sum())
    assert np.isfinite(method.bpb) and method.bpb != control.bpb
    # the control through the HF model equals one plain forward (the document fits the context)
    short = score_incontext("llama", lm, from_texts(["s"], ["Cats purr."], memory.tokenizer, 8), None,
                            InContextConfig(**{**CFG, "max_context": 64}))
    assert short.mode == "windows"
    z = torch.tensor([lm.start_id, *lm.encode("Cats purr.").tolist()])
    with torch.no_grad():
        lp = model(input_ids=z[None, :-1]).logits[0].log_softmax(-1).gather(-1, z[1:, None])[:, 0]
    assert short.doc_bits[0] == pytest.approx(float(-lp.sum() / math.log(2)), rel=1e-5)


def test_scored_positions_only_equal_the_full_computation(tiny_lm: BurrowLM) -> None:
    """``scored`` runs burrow's output layer on those positions alone: the same log-probs there, 0 elsewhere."""
    torch.manual_seed(0)
    v = tiny_lm.module.config.vocab_size
    inputs, targets = torch.randint(0, v, (3, 12)), torch.randint(0, v, (3, 12))
    scored = torch.zeros(3, 12, dtype=torch.bool)
    scored[0, 8:], scored[1, 3:7], scored[2, 11] = True, True, True
    full = tiny_lm.target_log_probs(inputs, targets, None)
    part = tiny_lm.target_log_probs(inputs, targets, None, scored)
    torch.testing.assert_close(part[scored], full[scored], rtol=1e-5, atol=1e-5)
    assert (part[~scored] == 0).all()


def _slow_prefix_byte_ends(decode_batch, ids: list[int], text: str) -> np.ndarray:
    """The definition: every prefix decoded in full."""
    from burrow.lm import _common_prefix

    full = text.encode("utf-8")
    ends = np.array([_common_prefix(t.encode("utf-8"), full) for t in decode_batch([ids[: i + 1] for i in
                                                                                      range(len(ids))])])
    ends[-1] = len(full)
    return np.maximum.accumulate(ends)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_prefix_byte_ends_fast_path_equals_decoding_every_prefix(memory: Memory, block: int) -> None:
    """Blocks decoded from a short look-back give the same byte ends as decoding every prefix, also
    around characters the tokenizer spells in bytes, odd spaces and a text that does not round-trip."""
    from burrow.lm import prefix_byte_ends

    tok = memory.tokenizer
    for text in (TEXT * 3, "Zürich — 東京 🌋 lava;  double  spaces\tand tabs… «quotes» 1,234.5 km²" * 4,
                 "  leading spaces, then\n\nnew lines and ﬁ ligatures ① ②", "🌋" * 20):
        ids = tok.encode(text)
        np.testing.assert_array_equal(prefix_byte_ends(tok.decode_batch, ids, text, block=block),
                                      _slow_prefix_byte_ends(tok.decode_batch, ids, text), err_msg=text)


def test_prefix_byte_ends_fast_path_with_a_byte_level_bpe() -> None:
    """The same with a byte-level BPE (GPT-2 style, Hugging Face tokenizers) and its clean-up of spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from burrow.lm import prefix_byte_ends

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([TEXT] * 5, trainers.BpeTrainer(vocab_size=300, initial_alphabet=
                                                            pre_tokenizers.ByteLevel.alphabet()))
    text = "Zürich — 東京 🌋 lava , ash . And gases ; " * 6 + TEXT

    def decode_batch(batch):
        return bpe.decode_batch([list(b) for b in batch])

    ids = bpe.encode(text).ids
    for block in (5, 64):
        np.testing.assert_array_equal(prefix_byte_ends(decode_batch, ids, text, block=block),
                                      _slow_prefix_byte_ends(decode_batch, ids, text))


def test_prefix_byte_ends_with_a_byte_fallback_decoder() -> None:
    """Llama-style byte fallback spells a whole run of byte tokens as U+FFFD when any byte is partial, so a
    block inside a long run of byte-spelled characters is not local: it must take the slow path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from burrow.lm import prefix_byte_ends

    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bpe.train_from_iterator([TEXT] * 5, trainers.BpeTrainer(vocab_size=300,
                                                            special_tokens=[f"<0x{i:02X}>" for i in range(256)]))

    def decode_batch(batch):
        return bpe.decode_batch([list(b) for b in batch], skip_special_tokens=False)

    for text in ("The lava " + "東京" * 200 + " dog.", "The lava " + "ꙮ" * 150 + " and ash."):
        ids = bpe.encode(text).ids
        assert len(ids) > 300
        np.testing.assert_array_equal(prefix_byte_ends(decode_batch, ids, text),
                                      _slow_prefix_byte_ends(decode_batch, ids, text))


def test_the_in_context_control_is_never_the_main_tables_reference() -> None:
    """With RETRO runs only and an in-context method, the gains of the main table have no baseline to be
    measured against; the control (a method's own base, mode "windows") must not become it."""
    from types import SimpleNamespace

    from burrow.evaluate.pipeline import EvalResult

    modes = {"retro [OFF]": "off", "retro [ON]": "on", "smollm2 (in-context windows)": "windows",
             "smollm2 +in-context bm25": "incontext"}
    scores = {name: SimpleNamespace(mode=mode) for name, mode in modes.items()}
    assert EvalResult.reference(SimpleNamespace(scores=scores)) is None  # type: ignore[arg-type]
    scores["base"] = SimpleNamespace(mode="baseline")
    assert EvalResult.reference(SimpleNamespace(scores=scores)) == "base"  # type: ignore[arg-type]


def test_a_stale_bm25_index_is_refused_before_any_scoring(memory: Memory, monkeypatch) -> None:
    """A BM25 index built before the memory's chunks changed fails at search time, after every model was
    scored: the preflight refuses it with the fix."""
    import burrow.memory.bm25 as bm25
    from burrow.evaluate.methods import MethodsConfig, check_methods

    config = MethodsConfig(methods=("incontext",))
    check_methods(config, ["baseline"], memory)  # up to date: accepted
    monkeypatch.setattr(bm25, "bm25_inputs", lambda mem: "chunks-changed-since")
    with pytest.raises(BurrowError, match="no up-to-date BM25 index .*`burrow memory bm25"):
        check_methods(config, ["baseline"], memory)
