"""Leakage (§2.6): r(C) on chunks with known overlaps, the vectorised LCS against brute force, bpb(α)."""

from __future__ import annotations

import numpy as np
import pytest

from burrow.evaluate import EvalData, bpb_alpha, longest_common_run, measure_leakage
from burrow.evaluate.leakage import leakage_ratios

PAD = 0
M, K, R = 64, 10, 128


def _brute(a: list[int], b: list[int]) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            n = 0
            while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n] and a[i + n] != PAD:
                n += 1
            best = max(best, n)
    return best


def _case(shared: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 64-token chunk (ids 1000+) and 10 neighbours (ids 1..999) of which one holds ``shared`` of its tokens."""
    chunk = np.arange(1000, 1000 + M)
    nbs = rng.integers(1, 1000, size=(K, R))
    if shared:
        start = int(rng.integers(0, M - shared + 1))
        nbs[3, 40 : 40 + shared] = chunk[start : start + shared]
        nbs[7, 5 : 5 + shared - 1] = chunk[:shared - 1]  # a shorter run elsewhere does not count
    return chunk, nbs


@pytest.mark.parametrize(("shared", "ratio"), [(0, 0.0), (8, 0.125), (64, 1.0)])
def test_r_of_constructed_chunks(shared: int, ratio: float) -> None:
    chunk, nbs = _case(shared, np.random.default_rng(shared))
    s, r = leakage_ratios(chunk[None], np.array([M]), nbs[None], PAD)
    assert s[0] == shared and r[0] == ratio


def test_a_batch_of_cases_at_once_and_padding_never_matches() -> None:
    rng = np.random.default_rng(1)
    cases = [_case(s, rng) for s in (0, 8, 64, 8, 0)]
    chunks = np.stack([c for c, _ in cases])
    nbs = np.stack([n for _, n in cases])
    # a short chunk (|C| = 10) padded with PAD; its neighbours are all padding (-1 ids) except 10 tokens
    short = np.full(M, PAD)
    short[:10] = np.arange(2000, 2010)
    nb_short = np.full((K, R), PAD)
    nb_short[0, 100:110] = short[:10]
    chunks = np.concatenate([chunks, short[None]])
    nbs = np.concatenate([nbs, nb_short[None]])
    s, r = leakage_ratios(chunks, np.array([M] * 5 + [10]), nbs, PAD)
    assert s.tolist() == [0, 8, 64, 8, 0, 10]
    assert r.tolist() == [0.0, 0.125, 1.0, 0.125, 0.0, 1.0]


def test_vectorised_lcs_equals_brute_force() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, size=(30, 12))  # tiny vocabulary: many accidental runs; 0 is padding
    b = rng.integers(0, 4, size=(30, 3, 20))
    got = longest_common_run(a, b, PAD)
    want = [max(_brute(a[i].tolist(), b[i, j].tolist()) for j in range(3)) for i in range(30)]
    assert got.tolist() == want


def test_bpb_alpha_bookkeeping() -> None:
    bits = np.array([10.0, 20.0, 30.0, 40.0])
    nbytes = np.array([5, 5, 10, 20])
    r = np.array([0.0, 0.125, 0.5, 1.0])
    got = bpb_alpha(bits, nbytes, r, (0.0, 0.1, 0.125, 0.5, 0.99, 1.0))
    want = [10 / 5, 10 / 5, 30 / 10, 60 / 20, 60 / 20, 100 / 40]  # r = α is included
    np.testing.assert_allclose(got, want)
    assert np.isnan(bpb_alpha(bits, nbytes, r + 0.5, (0.1,))[0])  # no chunk qualifies


def test_measure_leakage_on_eval_data_uses_true_chunk_lengths() -> None:
    doc = np.arange(10, 30)  # 20 tokens, m = 8: chunks of 8, 8, 4
    data = EvalData(["d"], [doc], np.array([20]), np.array([8, 8, 4]), 8, start_id=2, pad_id=PAD)
    nbs = np.full((3, 2, 16), PAD)
    nbs[0, 1, 3:7] = doc[2:6]  # 4 of 8
    nbs[1, 0, :16] = np.arange(10, 26)  # contains chunk 1 (tokens 18..25) entirely
    nbs[2, 0, 0:2] = doc[16:18]  # 2 of the last chunk's 4
    leak = measure_leakage(data, nbs, (0.0, 0.5, 1.0))
    assert leak.s.tolist() == [4, 8, 2]
    assert leak.r.tolist() == [0.5, 1.0, 0.5]
    np.testing.assert_allclose(leak.kept_bytes(data), [0.0, 12 / 20, 1.0])
    np.testing.assert_allclose(leak.curve(data, np.array([8.0, 16.0, 2.0])), [np.nan, 10 / 12, 26 / 20])
