"""Gopher's repetition filter (Rae et al. 2021, appendix A): drop documents that repeat lines, paragraphs
or n-grams.

How the paper's terms are read here (see ``docs/cleaning.md``):

- **lines** are non-blank lines, stripped; **paragraphs** are runs of lines separated by blank
  (whitespace-only) lines. A line/paragraph is a *duplicate* when the same text occurred earlier in the
  document, so a line seen twice counts once. Character fractions divide the characters of duplicate
  lines (paragraphs) by the characters of all lines (paragraphs).
- **n-grams** are over whitespace tokens (punctuation tokens included); characters are the tokens'
  characters without whitespace, so the fractions do not depend on how a corpus spaces punctuation.
- **most common n-gram** (n = 2, 3, 4): the characters covered by every occurrence of the most frequent
  n-gram (which must occur at least twice), each character counted once even where occurrences overlap.
- **duplicated n-grams** (n = 5 … 10): the characters covered by the repeats of n-grams — every
  occurrence after the first, as for lines — each character counted once where repeats overlap.

n-grams are compared by a 64-bit rolling hash of token ids (collisions within one document are
negligible), which keeps the whole filter in numpy.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np

from burrow.data.quality import Verdict, lines_of
from burrow.errors import BurrowError

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
REPETITION_RULES = (
    "dup_line_frac",
    "dup_para_frac",
    "dup_line_chars",
    "dup_para_chars",
    *(f"top_{n}gram" for n in TOP_NGRAMS),
    *(f"dup_{n}gram" for n in DUP_NGRAMS),
)
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for the rolling hash


@dataclass
class RepetitionConfig:
    """Thresholds of the repetition filter (all fractions, a document is dropped above them); Gopher's."""

    max_dup_line_frac: float = 0.30  # fraction of lines that repeat an earlier line
    max_dup_para_frac: float = 0.30  # fraction of paragraphs that repeat an earlier paragraph
    max_dup_line_chars: float = 0.20  # fraction of characters in repeated lines
    max_dup_para_chars: float = 0.20  # fraction of characters in repeated paragraphs
    max_top_2gram_chars: float = 0.20  # fraction of characters covered by the most common 2-gram
    max_top_3gram_chars: float = 0.18  # ... by the most common 3-gram
    max_top_4gram_chars: float = 0.16  # ... by the most common 4-gram
    max_dup_5gram_chars: float = 0.15  # fraction of characters covered by duplicated 5-grams
    max_dup_6gram_chars: float = 0.14  # ... by duplicated 6-grams
    max_dup_7gram_chars: float = 0.13  # ... by duplicated 7-grams
    max_dup_8gram_chars: float = 0.12  # ... by duplicated 8-grams
    max_dup_9gram_chars: float = 0.11  # ... by duplicated 9-grams
    max_dup_10gram_chars: float = 0.10  # ... by duplicated 10-grams

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not 0.0 <= value <= 1.0:
                raise BurrowError(f"repetition threshold {name} is a fraction in [0, 1]; got {value}")

    def limit(self, rule: str) -> float:
        """The threshold of a repetition rule, by rule name."""
        if rule.startswith(("top_", "dup_")) and rule.endswith("gram"):
            return float(getattr(self, f"max_{rule}_chars"))
        return float(getattr(self, f"max_{rule}"))


def paragraphs_of(text: str) -> list[str]:
    """Paragraphs: runs of non-blank lines (stripped, joined by newlines) separated by blank lines."""
    paras: list[str] = []
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            block.append(stripped)
        elif block:
            paras.append("\n".join(block))
            block = []
    if block:
        paras.append("\n".join(block))
    return paras


def duplicate_stats(items: list[str]) -> tuple[float, float]:
    """(fraction of items repeating an earlier one, fraction of characters in those repeats)."""
    seen: set[str] = set()
    dup_items = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    if not items:
        return 0.0, 0.0
    return dup_items / len(items), dup_chars / max(total_chars, 1)


class _Tokens:
    """Token ids, per-token character counts and rolling n-gram hashes of one document."""

    def __init__(self, text: str) -> None:
        vocab: dict[str, int] = {}
        tokens = text.split()
        self.ids = np.array([vocab.setdefault(t, len(vocab) + 1) for t in tokens], dtype=np.uint64)
        self.lens = np.array([len(t) for t in tokens], dtype=np.int64)
        self.total = int(self.lens.sum())
        self.cum = np.concatenate([[0], np.cumsum(self.lens)])

    def hashes(self, max_n: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (n, hash of the n-gram starting at each position) for n = 1 … max_n."""
        h = self.ids.copy()
        for n in range(1, max_n + 1):
            if n > 1:
                with np.errstate(over="ignore"):  # wrap-around is the hash
                    h = h[:-1] * _MULT + self.ids[n - 1 :]
            yield n, h

    def covered_chars(self, starts: np.ndarray, n: int) -> int:
        """Characters of the tokens covered by n-grams starting at ``starts``, each token counted once."""
        if starts.size == 0:
            return 0
        edges = np.zeros(self.ids.size + 1, dtype=np.int64)
        np.add.at(edges, starts, 1)
        np.add.at(edges, starts + n, -1)
        covered = np.cumsum(edges[:-1]) > 0
        return int(self.lens[covered].sum())

    def top_ngram_chars(self, h: np.ndarray, n: int) -> int:
        """Characters covered by the most common n-gram (ties: the longest); 0 if none repeats."""
        _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
        per_pos = counts[inverse]
        best = int(per_pos.max())
        if best < 2:
            return 0
        positions = np.flatnonzero(per_pos == best)
        char_len = self.cum[positions + n] - self.cum[positions]
        top = inverse[positions[np.argmax(char_len)]]
        return self.covered_chars(np.flatnonzero(inverse == top), n)

    def dup_ngram_chars(self, h: np.ndarray, n: int) -> int:
        """Characters covered by repeats (every occurrence after the first) of n-grams."""
        _, first = np.unique(h, return_index=True)
        repeat = np.ones(h.size, dtype=bool)
        repeat[first] = False
        return self.covered_chars(np.flatnonzero(repeat), n)


def repetition_verdict(text: str, config: RepetitionConfig, skip: Collection[str] = ()) -> Verdict | None:
    """The first repetition rule (in REPETITION_RULES order) that drops ``text``, or None if it passes."""
    line_frac, line_chars = duplicate_stats(lines_of(text))
    para_frac, para_chars = duplicate_stats(paragraphs_of(text))
    for rule, value in (
        ("dup_line_frac", line_frac),
        ("dup_para_frac", para_frac),
        ("dup_line_chars", line_chars),
        ("dup_para_chars", para_chars),
    ):
        if rule not in skip and value > config.limit(rule):
            return Verdict(rule, value, config.limit(rule))
    return _ngram_verdict(text, config, skip)


def _ngram_verdict(text: str, config: RepetitionConfig, skip: Collection[str]) -> Verdict | None:
    wanted = [r for r in REPETITION_RULES if r.endswith("gram") and r not in skip]
    if not wanted:
        return None
    tokens = _Tokens(text)
    if tokens.total == 0:
        return None
    max_n = max(int(r[4:-4]) for r in wanted)
    for n, h in tokens.hashes(max_n):
        if h.size == 0:
            break
        rule = f"top_{n}gram" if n in TOP_NGRAMS else f"dup_{n}gram"
        if rule not in wanted:
            continue
        chars = tokens.top_ngram_chars(h, n) if n in TOP_NGRAMS else tokens.dup_ngram_chars(h, n)
        value = chars / tokens.total
        if value > config.limit(rule):
            return Verdict(rule, value, config.limit(rule))
    return None
