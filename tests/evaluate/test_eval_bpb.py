"""Bits-per-byte: strided windows score every token once; hand-computable models; byte attribution."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from burrow.data.tokenizer import TokenizerConfig, train_tokenizer
from burrow.errors import BurrowError
from burrow.evaluate import EvalConfig, EvalData, evaluate, from_texts, model_entries, window_plan
from burrow.evaluate.bpb import bootstrap_gain, score_model, token_bits

CPU = torch.device("cpu")


class UniformLM(torch.nn.Module):
    """Logits all zero: every token costs exactly log2(V) bits."""

    def __init__(self, vocab: int, seq: int = 64) -> None:
        super().__init__()
        self.config = SimpleNamespace(retro=False, max_seq_len=seq, chunk_size=8, retrieved_len=16)
        self.vocab = vocab
        self.windows: list[int] = []

    def forward(self, tokens: torch.Tensor, neighbours=None, neighbour_mask=None) -> torch.Tensor:
        self.windows.extend([tokens.shape[1]] * tokens.shape[0])
        return torch.zeros(*tokens.shape, self.vocab)


class NextTokenLM(UniformLM):
    """Puts weight A on token (x_p + 1) % V at position p: p(target) is hand-computable from the input."""

    A = 5.0

    def forward(self, tokens: torch.Tensor, neighbours=None, neighbour_mask=None) -> torch.Tensor:
        out = torch.zeros(*tokens.shape, self.vocab)
        out.scatter_(-1, ((tokens + 1) % self.vocab)[..., None], math.log(self.A))
        return out


def _data(lengths: list[int], vocab: int = 50, m: int = 8, seed: int = 0, start: int = 2) -> EvalData:
    rng = np.random.default_rng(seed)
    tokens = [rng.integers(4, vocab, n) for n in lengths]
    doc_bytes = np.array([3 * n + 1 for n in lengths])  # any byte counts; chunk bytes must sum to them
    chunk_bytes = np.concatenate([_split_bytes(n, int(b), m) for n, b in zip(lengths, doc_bytes, strict=True)])
    return EvalData([str(i) for i in range(len(lengths))], tokens, doc_bytes, chunk_bytes, m, start, 3)


def _split_bytes(n: int, total: int, m: int) -> np.ndarray:
    c = -(-n // m)
    out = np.full(c, total // c)
    out[-1] += total - out.sum()
    return out


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_window_plan_scores_every_position_exactly_once(n: int) -> None:
    for length in list(range(1, 3 * n + 3)) + [10 * n + 1]:
        windows = window_plan(length, n)
        counts = np.zeros(length, dtype=int)
        for i, w in enumerate(windows):
            assert w.start % (n // 2) == 0 and w.end - w.start <= n and w.start <= w.score_from < w.end
            assert w.score_from - w.start == (0 if i == 0 else n // 2)  # later windows keep n/2 context
            counts[w.score_from : w.end] += 1
        assert (counts == 1).all(), (n, length)
        assert windows[-1].end == length


def test_window_plan_rejects_odd_windows() -> None:
    with pytest.raises(BurrowError):
        window_plan(10, 7)


@pytest.mark.parametrize("n", [16, 32, 64])
def test_uniform_model_bpb_is_tokens_times_log2v_over_bytes(n: int) -> None:
    lengths = [1, 5, 15, 16, 17, 40, 100, 129]  # shorter than, equal to and longer than the window
    data = _data(lengths)
    model = UniformLM(vocab=50)
    score = score_model("u", model, "baseline", data, n, None, CPU, None)
    want = sum(lengths) * math.log2(50) / data.doc_bytes.sum()
    assert score.bpb == pytest.approx(want, rel=1e-6)  # log-softmax runs in float32
    np.testing.assert_allclose(score.doc_bits, np.array(lengths) * math.log2(50), rtol=1e-6)
    # chunk bits sum to document bits; a full chunk costs m·log2 V
    np.testing.assert_allclose(np.bincount(data.chunk_doc, weights=score.chunk_bits), score.doc_bits)
    np.testing.assert_allclose(score.chunk_bits, data.chunk_len * math.log2(50), rtol=1e-6)
    # the model saw exactly the planned windows: no position is scored twice
    planned = sorted(w.end - w.start for L in lengths for w in window_plan(L + data.target_offset, n))
    assert sorted(model.windows) == planned


@pytest.mark.parametrize("n", [4, 8, 32])
def test_next_token_model_matches_hand_computation_with_start_token(n: int) -> None:
    V, A = 12, NextTokenLM.A
    doc = np.array([0, 1, 2, 7, 9, 10, 4, 5, 11, 0, 1, 2, 6, 5], dtype=np.int64)
    data = EvalData(["d"], [doc], np.array([40]), _split_bytes(len(doc), 40, 8), 8, start_id=11, pad_id=3)
    bits = token_bits(NextTokenLM(V), data, n, None, CPU, None)[0]
    x = np.concatenate([[11], doc[:-1]])  # x = [s] + d[:-1]
    hit = doc == (x + 1) % V
    want = np.where(hit, -np.log2(A / (A + V - 1)), -np.log2(1 / (A + V - 1)))
    np.testing.assert_allclose(bits, want, rtol=1e-6)
    assert hit[0]  # the first token is predicted from the start token: (11 + 1) % 12 = 0 = d[0]


def test_chunk_bytes_sum_to_utf8_bytes_and_split_characters_count_once(tmp_path) -> None:
    # characters the tokenizer never saw are split into UTF-8 byte tokens (byte fallback)
    texts = ["Unicode ☃ snow — " * 12 + "日本語のテキスト。" * 6, "short é", "plain ascii text " * 20]
    train = [f"plain ascii text and snow, line {i} of {j}\n" for i in range(30) for j in range(3)]
    tok = train_tokenizer(train, tmp_path, TokenizerConfig(vocab_size=300))
    for m in (1, 3, 8):
        data = from_texts(["a", "b", "c"], texts, tok, m)
        assert (data.chunk_bytes >= 0).all()
        np.testing.assert_array_equal(np.bincount(data.chunk_doc, weights=data.chunk_bytes),
                                      [len(t.encode()) for t in texts])
        assert data.n_bytes == sum(len(t.encode()) for t in texts)
        # byte-fallback tokens split multi-byte characters: each is owned whole by the chunk completing it
        for d, t in enumerate(texts):
            cum = np.cumsum(data.chunk_bytes[data.chunk_doc == d])
            for c in cum:
                t.encode()[:c].decode("utf-8", errors="strict")  # never inside a character
        assert m > 1 or (data.chunk_bytes == 0).any()  # some 1-token chunks hold only part of a character


def test_evaluate_without_memory_and_bootstrap_of_identical_models() -> None:
    data = _data([30, 50, 9, 70], vocab=20)
    models = {**model_entries("uniform", UniformLM(20)), "next": (NextTokenLM(20), "baseline")}
    result = evaluate(models, None, data, EvalConfig(seq_len=32, precision="fp32", bootstrap_samples=200))
    assert result.seq_len == 32
    assert result.bpb("uniform") == pytest.approx(159 * math.log2(20) / data.doc_bytes.sum(), rel=1e-6)
    same = bootstrap_gain(data, result.scores["uniform"], result.scores["uniform"], samples=100)
    assert same.gain == same.low == same.high == 0.0
    g = result.gain("next", "uniform")
    assert g.low <= g.gain <= g.high
    assert g.gain == pytest.approx(result.bpb("uniform") - result.bpb("next"))


def test_default_window_is_the_models_length_on_chunk_boundaries() -> None:
    data = _data([100])
    result = evaluate({"u": (UniformLM(50, seq=60), "baseline")}, None, data, EvalConfig(precision="fp32"))
    assert result.seq_len == 48  # 60 rounded down to a multiple of 2m = 16
    with pytest.raises(BurrowError, match="multiple"):
        evaluate({"u": (UniformLM(50), "baseline")}, None, data, EvalConfig(seq_len=20))
    with pytest.raises(BurrowError, match="RETRO"):
        evaluate({"u": (UniformLM(50), "on")}, None, data, EvalConfig())


def test_retro_on_has_its_gain_over_its_off_without_a_baseline() -> None:
    """`burrow eval RETRO_RUN` alone: RETRO[ON]'s gain over its own [OFF] is still reported (eval.json, tables)."""
    from burrow.evaluate.bpb import ModelScore
    from burrow.evaluate.pipeline import EvalResult
    from burrow.evaluate.report import format_methods

    data = _data([20, 20, 20])
    off = ModelScore("r [OFF]", "off", None, np.full(3, 100.0), np.tile([40.0, 30.0, 30.0], 3), data.doc_bytes)
    on = ModelScore("r [ON]", "on", 2, np.full(3, 80.0), np.tile([30.0, 25.0, 25.0], 3), data.doc_bytes)
    result = EvalResult(EvalConfig(bootstrap_samples=50), data, 32, {"r [OFF]": off, "r [ON]": on},
                        bases={"r [ON]": "r [OFF]"})
    assert result.reference() is None
    gain = result.gains()["r [ON]"]
    assert gain["reference"] == "r [OFF]" and "vs_reference" not in gain
    assert gain["alpha=1"]["gain"] == pytest.approx(60 / data.doc_bytes.sum())
    assert "+0.3279" in format_methods(result)


def test_bootstrap_below_alpha_leaves_out_resamples_without_such_chunks() -> None:
    """One document holds the only chunk with r(C) ≤ α, and every resample that draws it gives the same gain:
    the resamples that miss it have no bpb(α) and must not count as a gain of 0."""
    from burrow.evaluate.bpb import ModelScore

    data = _data([16] * 10)
    a = ModelScore("a", "baseline", None, np.zeros(10), np.full(20, 30.0), data.doc_bytes)
    b = ModelScore("b", "baseline", None, np.zeros(10), np.full(20, 40.0), data.doc_bytes)
    r = np.ones(20)
    r[0] = 0.0
    g = bootstrap_gain(data, a, b, r, alpha=0.125)
    assert g.gain == pytest.approx(10 / data.chunk_bytes[0])
    assert g.low == pytest.approx(g.gain) and g.high == pytest.approx(g.gain)


def test_a_model_shorter_than_two_chunks_is_refused_in_its_own_terms() -> None:
    """No --seq-len given and max_seq_len < 2m: the error names the model's length, not a "seq_len 0" nobody set."""
    with pytest.raises(BurrowError, match=r"max_seq_len \(12\) is shorter than 2 × the chunk size \(16\)"):
        evaluate({"u": (UniformLM(50, seq=12), "baseline")}, None, _data([30]), EvalConfig(precision="fp32"))
    assert evaluate({"u": (UniformLM(50, seq=12), "baseline")}, None, _data([30]),
                    EvalConfig(seq_len=16, precision="fp32")).seq_len == 16


def test_max_docs_reads_no_document_past_the_last_scored(tmp_path, caplog) -> None:
    """--max-docs N: the log's reading summary counts the N documents scored, not N + 1."""
    import logging

    from burrow.evaluate import load_eval_data

    train = [f"plain ascii text, line {i}\n" for i in range(60)]
    tok = train_tokenizer(train, tmp_path, TokenizerConfig(vocab_size=300))
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text("plain ascii text " * (i + 1) + "\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="burrow.evaluate.data"):
        data = load_eval_data(sorted(tmp_path.glob("doc*.txt")), tok, 8, max_docs=2)
    assert data.n_docs == 2
    assert "read 2 documents (53 bytes) from 2 files" in caplog.text
