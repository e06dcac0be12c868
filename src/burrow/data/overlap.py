"""The longest run of tokens two sequences share: the one kernel behind leakage and attribution.

Shape legend: q queries, m query tokens, k neighbours per query, r tokens per neighbour.

RETRO §2.6 measures leakage as the longest contiguous token run an evaluation chunk shares with any
of its neighbours; generation's attribution shows the longest span a generated chunk copied from
each neighbour. Both are the classic longest-common-substring recurrence
L[i, j] = L[i−1, j−1] + 1 where a[i] == b[j], run row by row over i with every query, neighbour and
column j at once (m numpy steps per block). Padding never matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 256  # queries per vectorised block (bounds the (block, k, r) working arrays)


@dataclass
class CommonRuns:
    """Longest shared run of each (query, neighbour) pair; ties keep the earliest run in the query."""

    lengths: np.ndarray  # (q, k) int64 run length (0: nothing shared)
    query_starts: np.ndarray  # (q, k) int64 start of the run in the query
    neighbour_starts: np.ndarray  # (q, k) int64 start of the run in the neighbour


def longest_common_runs(queries: np.ndarray, neighbours: np.ndarray, pad_id: int) -> CommonRuns:
    """Longest run each query (q, m) shares with each of its neighbours (q, k, r), batched."""
    a = np.asarray(queries, dtype=np.int64)
    b = np.asarray(neighbours, dtype=np.int64)
    q, k = b.shape[0], b.shape[1]
    out = CommonRuns(*(np.zeros((q, k), dtype=np.int64) for _ in range(3)))
    for s in range(0, q, BLOCK):
        block = _runs_block(a[s : s + BLOCK], b[s : s + BLOCK], pad_id)
        out.lengths[s : s + BLOCK], out.query_starts[s : s + BLOCK], out.neighbour_starts[s : s + BLOCK] = block
    return out


def _runs_block(a: np.ndarray, b: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a`` (q, m), ``b`` (q, k, r) -> (length, start in a, start in b), each (q, k)."""
    q, k, r = b.shape
    best = np.zeros((q, k), dtype=np.int64)
    a_start = np.zeros((q, k), dtype=np.int64)
    b_start = np.zeros((q, k), dtype=np.int64)
    if r == 0:
        return best, a_start, b_start
    b_real = b != pad_id  # (q, k, r)
    prev = np.zeros((q, k, r + 1), dtype=np.int32)  # column 0 is the j = -1 border
    for i in range(a.shape[1]):
        ai = a[:, i]  # (q,)
        eq = (b == ai[:, None, None]) & b_real & (ai != pad_id)[:, None, None]  # (q, k, r)
        cur = np.zeros_like(prev)
        cur[:, :, 1:] = np.where(eq, prev[:, :, :-1] + 1, 0)
        j = cur.argmax(axis=2)  # (q, k) first column of the longest run ending at i
        run = np.take_along_axis(cur, j[:, :, None], axis=2)[:, :, 0].astype(np.int64)  # (q, k)
        longer = run > best  # strictly: ties keep the earlier run in a
        best = np.where(longer, run, best)
        a_start = np.where(longer, i - run + 1, a_start)
        b_start = np.where(longer, j - run, b_start)
        prev = cur
    return best, a_start, b_start


def longest_common_run(chunks: np.ndarray, neighbours: np.ndarray, pad_id: int) -> np.ndarray:
    """(q,) longest run each chunk (q, m) shares with any of its neighbours (q, k, r)."""
    runs = longest_common_runs(chunks, neighbours, pad_id)
    return runs.lengths.max(axis=1) if runs.lengths.shape[1] else np.zeros(len(runs.lengths), dtype=np.int64)
