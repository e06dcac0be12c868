"""bench/oracle_retrieval.py's control: its unrelated second neighbour never comes from the chunk's own document."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_unrelated_neighbour_is_from_another_document() -> None:
    """A draw over all chunks returned the chunk itself or its document's next chunk (the text to predict) for
    some chunks, though the control states that same-document exclusion holds."""
    sys.path.insert(0, str(BENCH))
    try:
        from oracle_retrieval import unrelated_chunks
    finally:
        sys.path.remove(str(BENCH))
    docs = np.repeat(np.arange(3), [50, 3, 1])  # one long document holds most chunks: many draws would clash
    for seed in range(5):
        other = unrelated_chunks(docs, seed)
        assert other.shape == docs.shape and (docs[other] != docs).all()
        assert set(other[docs == 0]) - set(np.flatnonzero(docs != 0)) == set()
