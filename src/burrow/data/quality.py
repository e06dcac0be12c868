"""Gopher's MassiveText quality filter (Rae et al. 2021, appendix A): simple heuristics on words and lines.

How the paper's terms are read here (see ``docs/cleaning.md``):

- a **word** is a whitespace-separated token with leading/trailing punctuation and symbols stripped;
  a token that is only punctuation (``,`` ``--`` ``@-@``) is not a word. Words keep their case for
  lengths and are lower-cased to match stop words.
- a **line** is a non-blank line (blank lines neither start with a bullet nor end with an ellipsis, and
  counting them would let blank-line-heavy formats like WikiText dilute both ratios).
- the hash / ellipsis ratios count ``#`` characters and ellipses (``...`` or ``…``) in the whole text per
  word, separately, each against the same 0.1 limit.

Each rule returns a :class:`Verdict` (the measured value and the limit) when it drops a document.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass

from burrow.errors import BurrowError

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# Characters that start a bulleted line; '-' and '*' are the Markdown bullets.
BULLETS = ("•", "●", "○", "◦", "▪", "▫", "‣", "⁃", "-", "*", "–", "·")
ELLIPSES = ("...", "…")
# Unicode general categories stripped from both ends of a token before it counts as a word:
# punctuation (P*) and symbols (S*), e.g. ``,`` ``“`` ``●`` ``→`` ``©`` and emoji.
_EDGE_CATEGORIES = ("P", "S")

QUALITY_RULES = (
    "min_words",
    "max_words",
    "min_mean_word_length",
    "max_mean_word_length",
    "hash_ratio",
    "ellipsis_ratio",
    "bullet_lines",
    "ellipsis_lines",
    "alpha_words",
    "stop_words",
)


@dataclass(frozen=True)
class Verdict:
    """Why a document was dropped: the rule, the value measured on it and the limit it crossed."""

    rule: str  # one of the rule names (QUALITY_RULES, REPETITION_RULES, dedup rules)
    value: float  # what the document measured
    limit: float  # the configured threshold it fell outside of
    match: str | None = None  # for duplicates / contamination: id of the document it matched

    def describe(self) -> str:
        """One line, e.g. ``dup_line_frac 0.45 > 0.3``."""
        extra = f" (matches {self.match})" if self.match else ""
        return f"{self.rule} {self.value:.4g} vs limit {self.limit:g}{extra}"


@dataclass
class QualityConfig:
    """Thresholds of the quality filter; defaults are Gopher's (PAPERS.md, Gopher section)."""

    min_words: int = 50  # fewer words than this: too short to be a useful document
    max_words: int = 100_000  # more words than this: likely a dump, not a document
    min_mean_word_length: float = 3.0  # mean word length (characters) below this: gibberish / lists
    max_mean_word_length: float = 10.0  # mean word length above this: URLs, hashes, run-together text
    max_hash_ratio: float = 0.1  # '#' characters per word above this: hashtag or markup spam
    max_ellipsis_ratio: float = 0.1  # ellipses per word above this: truncated snippets
    max_bullet_lines: float = 0.9  # fraction of lines starting with a bullet above this: menus, lists
    max_ellipsis_lines: float = 0.3  # fraction of lines ending with an ellipsis above this: teasers
    min_alpha_words: float = 0.8  # fraction of words containing a letter below this: tables, code, numbers
    min_stop_words: int = 2  # fewer stop-word occurrences (repeats count) than this: not prose
    stop_words: tuple[str, ...] = STOP_WORDS  # Gopher's eight English stop words

    def __post_init__(self) -> None:
        if not 0 <= self.min_words <= self.max_words:
            raise BurrowError(f"need 0 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if not 0 <= self.min_mean_word_length <= self.max_mean_word_length:
            raise BurrowError("need 0 <= min_mean_word_length <= max_mean_word_length")
        for name in ("max_bullet_lines", "max_ellipsis_lines", "min_alpha_words"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BurrowError(f"{name} is a fraction; got {getattr(self, name)}")
        if self.max_hash_ratio < 0 or self.max_ellipsis_ratio < 0 or self.min_stop_words < 0:
            raise BurrowError("ratios and stop-word counts must be >= 0")
        self.stop_words = tuple(w.lower() for w in self.stop_words)


def words_of(text: str) -> list[str]:
    """Gopher words: whitespace tokens with edge punctuation and symbols stripped, tokens of only those dropped."""
    out = []
    for token in text.split():
        if not (token[0].isalnum() and token[-1].isalnum()):  # most tokens start and end with a letter or digit
            token = _strip_edges(token)
            if not token:
                continue
        out.append(token)
    return out


def _strip_edges(token: str) -> str:
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start])[0] in _EDGE_CATEGORIES:
        start += 1
    while end > start and unicodedata.category(token[end - 1])[0] in _EDGE_CATEGORIES:
        end -= 1
    return token[start:end]


def lines_of(text: str) -> list[str]:
    """Non-blank lines, stripped of surrounding whitespace."""
    return [s for s in (ln.strip() for ln in text.splitlines()) if s]


def quality_verdict(text: str, config: QualityConfig, skip: Collection[str] = ()) -> Verdict | None:
    """The first quality rule (in QUALITY_RULES order) that drops ``text``, or None if it passes.

    ``skip`` names rules that are switched off. Values are computed lazily, rule by rule.
    """
    if not unicodedata.is_normalized("NFC", text):  # lengths in composed characters: "é" is one, as in NFC text
        text = unicodedata.normalize("NFC", text)
    words = words_of(text)
    n = len(words)
    lines = lines_of(text)
    c = config
    # (rule, measured value, limit, True if the value must not exceed the limit / False if not fall below)
    checks: list[tuple[str, Callable[[], float], float, bool]] = [
        ("min_words", lambda: n, c.min_words, False),
        ("max_words", lambda: n, c.max_words, True),
        ("min_mean_word_length", lambda: _mean_len(words), c.min_mean_word_length, False),
        ("max_mean_word_length", lambda: _mean_len(words), c.max_mean_word_length, True),
        ("hash_ratio", lambda: text.count("#") / max(n, 1), c.max_hash_ratio, True),
        ("ellipsis_ratio", lambda: _ellipses(text) / max(n, 1), c.max_ellipsis_ratio, True),
        ("bullet_lines", lambda: _frac(lines, _is_bullet), c.max_bullet_lines, True),
        ("ellipsis_lines", lambda: _frac(lines, _ends_ellipsis), c.max_ellipsis_lines, True),
        ("alpha_words", lambda: _frac(words, _has_alpha), c.min_alpha_words, False),
        ("stop_words", lambda: _stop_count(words, c.stop_words), c.min_stop_words, False),
    ]
    for rule, measure, limit, is_max in checks:
        if rule in skip:
            continue
        value = measure()
        if (value > limit) if is_max else (value < limit):
            return Verdict(rule, value, limit)
    return None


def _mean_len(words: list[str]) -> float:
    # A document with no words has no mean length; treat it as 0 so min_mean_word_length drops it.
    return sum(map(len, words)) / len(words) if words else 0.0


def _ellipses(text: str) -> int:
    return text.count("...") + text.count("…")


def _is_bullet(line: str) -> bool:
    return line.startswith(BULLETS)


def _ends_ellipsis(line: str) -> bool:
    return line.endswith(ELLIPSES)


def _has_alpha(word: str) -> bool:
    # isalpha() is the fast path: most words are letters only.
    return word.isalpha() or any(ch.isalpha() for ch in word)


def _frac(items: list[str], pred: Callable[[str], bool]) -> float:
    # An empty document has no lines/words: report 0, which the word-count rule already catches.
    return sum(1 for x in items if pred(x)) / len(items) if items else 0.0


def _stop_count(words: list[str], stop_words: tuple[str, ...]) -> int:
    stops = set(stop_words)
    return sum(1 for w in words if w.lower() in stops)
