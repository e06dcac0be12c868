"""RETRO[ON] evaluation never lets a target token reach the conditioning of its own prediction.

The whole evaluation path is used — input x = [pad] × (m − 1) + [s] + d[:-1] (the one chunk layout),
queries from :meth:`EvalData.input_chunks`, neighbours sliced per window by ``retrieved_from_ids``, strided windows
in ``run_windows`` — with a stand-in retriever whose neighbours are a function of every query token,
so any leak of a target into its own retrieval shows up in the logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from burrow.evaluate import EvalData
from burrow.evaluate.bpb import run_windows
from burrow.evaluate.retrieval import retrieved_from_ids
from burrow.model import ModelConfig, build_model

M, V, K, N = 4, 61, 2, 16  # chunk, vocabulary, neighbours, window (stride 8)
PAD = 0
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=2, head_dim=16, max_seq_len=N, retro=True,
                      cca_layers=(1, 2), chunk_size=M, retrieved_len=2 * M, enc_d_model=32, enc_n_heads=2,
                      enc_head_dim=16, zero_init_cca_out=False)  # non-zero CCA: neighbours matter
    return build_model(cfg).eval()


def _data(doc: np.ndarray) -> EvalData:
    return EvalData(["d"], [doc], np.array([len(doc)]), _bytes(len(doc)), M, start_id=1, pad_id=PAD)


def _bytes(n: int) -> np.ndarray:
    out = np.full(-(-n // M), M)
    out[-1] = n - M * (len(out) - 1)
    return out


def _fake_values(queries: np.ndarray) -> np.ndarray:
    """(q, m) query tokens -> (q, k, 2m) 'retrieved' tokens that change whenever any query token does."""
    mix = (queries * np.array([3, 5, 7, 11])).sum(1)  # (q,)
    base = np.concatenate([queries, queries[:, ::-1]], axis=1)  # (q, 2m)
    return np.stack([(base + mix[:, None] * (j + 1)) % (V - 2) + 2 for j in range(K)], axis=1)


def _logprobs(model: torch.nn.Module, doc: np.ndarray, queries_of=None, bump_chunk: int | None = None) -> np.ndarray:
    """(L, v) log-probabilities of every position, each from the window that scores it."""
    data = _data(doc)
    queries = (queries_of or (lambda d: d.input_chunks()))(data)  # (q_in, m)
    values = _fake_values(queries)
    if bump_chunk is not None:
        values[bump_chunk] = (values[bump_chunk] + 1) % (V - 2) + 2
    ids = np.repeat(np.arange(len(queries))[:, None], K, axis=1)  # input chunk i "retrieves" table row i

    def lookup(rows: np.ndarray) -> np.ndarray:
        return values[rows[:, 0]]  # (l, k, r)

    retrieved = retrieved_from_ids(ids, data, K, lookup)
    out = np.full((len(doc), V), np.nan)
    p0 = data.target_offset  # input position whose target is d[0]
    for group, logp in run_windows(model, data, N, retrieved, CPU, None):
        for (_, w), row in zip(group, logp.numpy(), strict=True):
            lo = max(w.score_from, p0)
            out[lo - p0 : w.end - p0] = row[lo - w.start :]
    assert not np.isnan(out).any()
    return out


DOC = np.random.default_rng(0).integers(2, V, 45)  # 45 tokens: windows [0,16) [8,24) … [32,45), partial chunk


@pytest.mark.parametrize("j", [0, 2, 3, 4, 7, 11, 12, 15, 16, 23, 24, 31, 35, 40, 44])
def test_perturbing_target_j_changes_no_logit_at_or_before_position_j(model, j: int) -> None:
    ref = _logprobs(model, DOC)
    doc = DOC.copy()
    doc[j] = (doc[j] + 7) % (V - 2) + 2
    out = _logprobs(model, doc)
    # position j predicts d[j]: neither its context nor any retrieval feeding it may contain d[j]
    np.testing.assert_allclose(out[: j + 1], ref[: j + 1], rtol=0, atol=1e-6)
    if j + 1 < len(DOC):
        assert np.abs(out[j + 1] - ref[j + 1]).max() > 1e-5  # d[j] is the next position's input


def test_queries_are_the_memory_aligned_document_chunks() -> None:
    data = _data(DOC)
    q = data.input_chunks()
    assert len(q) == (len(DOC) - 1) // M == 11
    np.testing.assert_array_equal(q, DOC[: 11 * M].reshape(-1, M))  # C_0 … C_10, cut as the memory cuts
    x = data.inputs(0)
    np.testing.assert_array_equal(x[M : 2 * M], DOC[:M])  # input chunk 1 of x is C_0
    assert list(x[:M]) == [PAD] * (M - 1) + [1]  # input chunk 0: pads, then s (predicts d[0])


@pytest.mark.parametrize("u", range((45 - 1) // M))
def test_chunk_u_retrieval_conditions_only_targets_after_its_query(model, u: int) -> None:
    ref = _logprobs(model, DOC)
    out = _logprobs(model, DOC, bump_chunk=u)
    first = (u + 1) * M  # the CCA offset: query C_u enters at the last input of C_u, which predicts d[(u+1)m]
    np.testing.assert_allclose(out[:first], ref[:first], rtol=0, atol=1e-6)
    assert np.abs(out[first:] - ref[first:]).max() > 1e-5
    # the query C_u = d[u·m … (u+1)·m - 1] holds only targets before `first`
    assert (u + 1) * M - 1 < first


def test_querying_with_the_target_chunk_would_leak(model) -> None:
    """The test above can fail: conditioning C_{u+1} on neighbours of C_{u+1} itself lets d[(u+1)m] see itself."""

    def target_queries(data: EvalData) -> np.ndarray:
        return data.target_chunks()[1 : 1 + len(data.input_chunks())]

    j = 2 * M  # first target of C_2, conditioned by input chunk 2's neighbours
    ref = _logprobs(model, DOC, target_queries)
    doc = DOC.copy()
    doc[j] = (doc[j] + 7) % (V - 2) + 2
    out = _logprobs(model, doc, target_queries)
    assert np.abs(out[j] - ref[j]).max() > 1e-5
