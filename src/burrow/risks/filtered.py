"""A memory whose search results never contain chunks a toxicity scorer flags: RETRO reads a filtered memory.

Filtering at search time, not by rebuilding: each search fetches ``overfetch`` × k neighbours from the
same index, scores each candidate's decoded [chunk, continuation] (what RETRO would read) with the
scorer, drops those at or above the threshold, and keeps the nearest k that remain (missing: −1 /
inf, as for a small memory). Scores are cached per chunk. For the neighbours actually returned this is
exactly what a memory rebuilt without the flagged chunks would return, as long as at least k of the
``overfetch`` · k nearest survive (counted in ``short``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from burrow.memory import Memory
from burrow.memory.chunks import neighbour_values
from burrow.risks.classifier import ToxicityScorer

_COUNTS = ("examined", "dropped", "short_queries", "chunks_scored", "chunks_flagged")


class FilteredMemory(Memory):
    """``memory`` with chunks scored ≥ ``threshold`` by ``scorer`` dropped from every search."""

    def __init__(self, memory: Memory, scorer: ToxicityScorer, threshold: float, overfetch: int = 4) -> None:
        super().__init__(memory.dir, encoder=memory.encoder)  # shares the loaded encoder
        self.scorer, self.threshold, self.overfetch = scorer, threshold, overfetch
        self.scores: dict[int, float] = {}  # chunk id -> toxicity of its [chunk, continuation]
        self.dropped = 0  # candidate neighbours dropped (counting repeats)
        self.examined = 0  # candidate neighbours scored or looked up
        self.short = 0  # queries left with fewer than k neighbours after filtering
        self._loaded: dict[str, int] | None = None  # counts of reused samples' searches (load_stats)

    def search_keys(self, keys: np.ndarray, k: int = 2, exclude_docs: np.ndarray | None = None,
                    within: np.ndarray | None = None,
                    progress: Callable[[int], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Memory.search_keys`, without flagged chunks."""
        dists, ids = super().search_keys(keys, k * self.overfetch, exclude_docs, within, progress)
        self._score(ids)
        out_ids = np.full((len(ids), k), -1, dtype=np.int64)  # (q, k)
        out_d = np.full((len(ids), k), np.inf, dtype=np.float32)
        for q in range(len(ids)):
            keep = [j for j in range(ids.shape[1]) if ids[q, j] >= 0 and self.scores[int(ids[q, j])] < self.threshold]
            valid = int((ids[q] >= 0).sum())
            self.examined += valid
            self.dropped += valid - len(keep)
            keep = keep[:k]
            self.short += len(keep) < min(k, valid)
            out_ids[q, : len(keep)] = ids[q, keep]
            out_d[q, : len(keep)] = dists[q, keep]
        return out_d, out_ids

    def _score(self, ids: np.ndarray) -> None:
        new = sorted({int(i) for i in ids.ravel() if i >= 0} - self.scores.keys())
        if not new:
            return
        values = neighbour_values(self.store, self.chunks, np.array(new, dtype=np.int64)[:, None])[:, 0]  # (c, r)
        texts = [self.tokenizer.decode([t for t in row.tolist() if t != self.tokenizer.pad_id]) for row in values]
        self.scores.update(zip(new, self.scorer(texts).tolist(), strict=True))

    def load_stats(self, stats: dict[str, Any]) -> None:
        """Take the counts of the searches that made reused samples (what :meth:`stats` said then)."""
        self._loaded = {k: int(stats[k]) for k in _COUNTS}

    def stats(self) -> dict[str, Any]:
        """How much the filter did (in the searches of reused samples when none was made since)."""
        if self._loaded is not None and not self.examined:
            return {**self._loaded, "threshold": self.threshold, "overfetch": self.overfetch}
        return {"examined": self.examined, "dropped": self.dropped, "short_queries": self.short,
                "chunks_scored": len(self.scores),
                "chunks_flagged": sum(v >= self.threshold for v in self.scores.values()),
                "threshold": self.threshold, "overfetch": self.overfetch}
