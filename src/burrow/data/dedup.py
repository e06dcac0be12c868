"""Deduplication and test-set decontamination, as Gopher and RETRO did them.

- **Exact**: a 128-bit BLAKE2b hash of the normalised text (NFKC, case-folded, punctuation removed,
  whitespace collapsed); the first document with a given hash is kept.
- **Near-duplicate**: MinHash over word 13-grams of the normalised text, indexed with datasketch's
  MinHashLSH. A document is dropped when the index returns a kept document whose estimated Jaccard
  similarity (over all permutations) is >= the threshold (0.8). Documents are visited in input order
  and only kept documents enter the index, so each cluster keeps its first document — deterministic for
  a given input order.
- **Decontamination**: the evaluation documents are indexed the same way; a training document is
  dropped when its estimated 13-gram Jaccard similarity to any of them is >= 0.8 (RETRO's rule), and,
  optionally, when it shares any 13-gram with them.

**Bands and rows.** With b bands of r rows, a pair of Jaccard s becomes an LSH candidate with
probability 1 - (1 - s^r)^b. :func:`lsh_params` picks, among the (b, r) with b >= 2 that make a pair at
the threshold a candidate with probability >= 0.99, the one whose curve rises latest (the fewest extra
candidates). For 256 permutations and 0.8 this is b = 26, r = 8 (208 permutations, 50 % point 0.635):
candidates at s = 0.5 / 0.7 / 0.8 / 0.85 are found with probability 0.10 / 0.79 / 0.99 / 1.00. Candidates
are then confirmed by the MinHash estimate over all 256 permutations (standard error ~0.025 near 0.8), so
the rule applied is "estimated Jaccard >= threshold", not lost to the LSH stage.

Only hashes, signatures and document ids are held in memory, never texts.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
import unicodedata
import zlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # datasketch is imported where used, so the CLI starts without it
    from datasketch import MinHash

from burrow.data.corpus import Document
from burrow.data.quality import Verdict
from burrow.errors import BurrowError

log = logging.getLogger(__name__)

# In the order a document is judged: exact copy, then decontamination, then near-duplicates.
DEDUP_RULES = ("exact_duplicate", "contaminated_jaccard", "contaminated_ngram", "near_duplicate")
_MULT = np.uint64(0x9E3779B97F4A7C15)
_BATCH = 4096  # shingles per MinHash update: bounds the (shingles x permutations) temporary
# Punctuation and symbol categories removed by normalisation.
_DROP_CATEGORIES = ("P", "S")


@dataclass
class DedupConfig:
    """Near-duplicate and decontamination settings; defaults follow Gopher / RETRO (13-grams, 0.8)."""

    ngram: int = 13  # shingle length in words
    threshold: float = 0.8  # near-duplicate: drop at estimated Jaccard >= this
    contamination_threshold: float = 0.8  # decontamination: drop at estimated Jaccard >= this
    shared_ngram: bool = False  # decontamination: also drop documents sharing any 13-gram with eval data
    num_perm: int = 256  # MinHash permutations (more = sharper S-curve, more memory per document)
    bands: int | None = None  # LSH bands; None = chosen by lsh_params(threshold, num_perm)
    rows: int | None = None  # LSH rows per band; set together with bands
    seed: int = 1  # MinHash permutation seed (fixed so runs are reproducible)

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise BurrowError(f"ngram must be >= 1, got {self.ngram}")
        for name in ("threshold", "contamination_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise BurrowError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.num_perm < 2:
            raise BurrowError(f"num_perm must be ≥ 2 (MinHash permutations), got {self.num_perm}")
        if not 0 <= self.seed < 2**32:
            raise BurrowError(f"seed must be in [0, 2^32), got {self.seed}")
        if (self.bands is None) != (self.rows is None):
            raise BurrowError("set both bands and rows, or neither")
        if self.bands is not None and self.rows is not None and (self.bands < 2 or self.rows < 1):
            raise BurrowError(f"LSH needs bands >= 2 and rows >= 1, got bands={self.bands}, rows={self.rows}")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise BurrowError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")

    def lsh(self, threshold: float) -> tuple[int, int]:
        """(bands, rows) for an index at ``threshold``."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return lsh_params(threshold, self.num_perm)


def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) that make a pair at ``threshold`` an LSH candidate with probability >= ``recall``,
    with as few candidates below it as possible (the latest-rising such curve). At least 2 bands
    (datasketch's minimum); with too few permutations for ``recall``, the curve that comes closest."""
    options = [(b, r) for r in range(1, num_perm // 2 + 1) for b in range(2, num_perm // r + 1)]
    if not options:
        raise BurrowError(f"num_perm must be >= 2 for LSH (2 bands), got {num_perm}")
    enough = [br for br in options if candidate_probability(threshold, *br) >= recall]
    if not enough:
        return max(options, key=lambda br: (candidate_probability(threshold, *br), br[0] * br[1]))
    return max(enough, key=lambda br: (s_curve_midpoint(*br), br[0] * br[1]))


def s_curve_midpoint(bands: int, rows: int) -> float:
    """Jaccard similarity at which a pair becomes an LSH candidate with probability 1/2."""
    return float((1 - 0.5 ** (1 / bands)) ** (1 / rows))


def candidate_probability(s: float, bands: int, rows: int) -> float:
    """Probability that a pair with Jaccard ``s`` shares at least one LSH band."""
    return float(1 - (1 - s**rows) ** bands)


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols removed, whitespace collapsed: 'the same text'."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.translate(_punctuation_table()).split())


@functools.cache
def _punctuation_table() -> dict[int, str]:
    # Built once (~0.3 s): str.translate is far faster than a per-character category lookup.
    drop = _DROP_CATEGORIES
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] in drop}


def content_hash(text: str) -> bytes:
    """128-bit hash of the normalised text, the key of exact deduplication."""
    return hash_of_normalised(normalise(text))


def hash_of_normalised(normalised: str) -> bytes:
    """:func:`content_hash` of text already passed through :func:`normalise`."""
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


def shingle_hashes(text: str, n: int = 13) -> np.ndarray:
    """64-bit hashes of the word n-grams of the normalised text (one hash of all words if shorter)."""
    return shingles_of_normalised(normalise(text), n)


def shingles_of_normalised(normalised: str, n: int = 13) -> np.ndarray:
    """:func:`shingle_hashes` of text already passed through :func:`normalise`."""
    words = normalised.split()
    if not words:
        return np.zeros(0, dtype=np.uint64)
    ids = np.array([zlib.crc32(w.encode("utf-8")) + 1 for w in words], dtype=np.uint64)
    n = min(n, ids.size)
    h = ids[: ids.size - n + 1].copy()
    with np.errstate(over="ignore"):  # wrap-around is the hash
        for j in range(1, n):
            h = h * _MULT + ids[j : ids.size - n + 1 + j]
    return h


class MinHasher:
    """Builds datasketch MinHashes from shingle hashes with one fixed set of permutations."""

    def __init__(self, num_perm: int, seed: int) -> None:
        self.num_perm = num_perm
        from datasketch import MinHash

        self._template = MinHash(num_perm=num_perm, seed=seed)

    def __call__(self, shingles: np.ndarray) -> MinHash:
        """MinHash of a document's shingle hashes (folded to the 32 bits datasketch's scheme expects)."""
        from datasketch import MinHash

        m = MinHash(
            num_perm=self.num_perm,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
            hashfunc=int,
        )
        folded = ((shingles >> np.uint64(32)) ^ (shingles & np.uint64(0xFFFFFFFF))).astype(np.uint32)
        for start in range(0, folded.size, _BATCH):
            m.update_batch(folded[start : start + _BATCH].tolist())
        return m


class NearDuplicateIndex:
    """MinHash LSH over documents, confirming candidates by estimated Jaccard >= threshold."""

    def __init__(self, threshold: float, config: DedupConfig) -> None:
        self.threshold = threshold
        self.params = config.lsh(threshold)
        from datasketch import MinHashLSH

        self._lsh = MinHashLSH(num_perm=config.num_perm, params=self.params)
        self._signatures: list[np.ndarray] = []  # uint32 signature per indexed document, by key
        self._ids: list[str] = []  # document id per key, for the report

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, doc_id: str, minhash: MinHash) -> None:
        """Index a document."""
        key = len(self._ids)
        self._lsh.insert(key, minhash, check_duplication=False)
        self._signatures.append(np.asarray(minhash.hashvalues, dtype=np.uint32).copy())
        self._ids.append(doc_id)

    def match(self, minhash: MinHash) -> tuple[str, float] | None:
        """(id, estimated Jaccard) of the most similar indexed document at or above threshold, else None."""
        sig = np.asarray(minhash.hashvalues, dtype=np.uint32)
        best: tuple[str, float] | None = None
        for key in sorted(self._lsh.query(minhash)):  # sorted: ties resolve to the earliest document
            est = float(np.mean(self._signatures[key] == sig))
            if est >= self.threshold and (best is None or est > best[1]):
                best = (self._ids[key], est)
        return best


@dataclass
class DecontaminationStats:
    """What decontamination checked and removed."""

    eval_documents: int = 0
    checked: int = 0
    removed_jaccard: int = 0
    removed_ngram: int = 0
    removed_bytes: int = 0
    examples: list[dict[str, object]] = field(default_factory=list)  # first few removals

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return dict(vars(self))


class Decontaminator:
    """Index of evaluation documents; :meth:`check` says whether a training text overlaps them."""

    def __init__(self, eval_docs: Iterable[Document], config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        self._minhash = MinHasher(self.config.num_perm, self.config.seed)
        self._index = NearDuplicateIndex(self.config.contamination_threshold, self.config)
        self._ngrams: dict[int, str] = {}  # eval 13-gram hash -> first eval id holding it
        for doc in eval_docs:
            shingles = shingle_hashes(doc.text, self.config.ngram)
            self._index.add(doc.id, self._minhash(shingles))
            if self.config.shared_ngram and len(normalise(doc.text).split()) >= self.config.ngram:
                for h in shingles.tolist():
                    self._ngrams.setdefault(h, doc.id)
        log.info("decontamination index: %d evaluation documents", len(self._index))

    def __len__(self) -> int:
        return len(self._index)

    def check(
        self,
        text: str,
        shingles: np.ndarray | None = None,
        minhash: MinHash | None = None,
        skip: Collection[str] = (),
    ) -> Verdict | None:
        """A Verdict if ``text`` is within the Jaccard threshold of an eval document or shares an n-gram.

        ``shingles`` / ``minhash`` may be passed when the caller already computed them; ``skip`` names
        rules (``contaminated_jaccard``, ``contaminated_ngram``) switched off.
        """
        if shingles is None:
            shingles = shingle_hashes(text, self.config.ngram)
        if "contaminated_jaccard" not in skip:
            found = self._index.match(minhash if minhash is not None else self._minhash(shingles))
            if found is not None:
                return Verdict("contaminated_jaccard", found[1], self._index.threshold, match=found[0])
        if self._ngrams and "contaminated_ngram" not in skip:
            shared = [h for h in shingles.tolist() if h in self._ngrams]
            if shared:
                return Verdict("contaminated_ngram", len(shared), 0, match=self._ngrams[shared[0]])
        return None


def decontaminate(
    train_docs: Iterable[Document],
    eval_docs: Iterable[Document],
    threshold: float = 0.8,
    shared_ngram: bool = False,
    config: DedupConfig | None = None,
    stats: DecontaminationStats | None = None,
    max_examples: int = 5,
) -> Iterator[Document]:
    """Yield the training documents that do not overlap the evaluation documents, counting into ``stats``.

    A training document is removed when its estimated 13-gram Jaccard similarity to any evaluation
    document is >= ``threshold`` and, with ``shared_ngram``, when it shares any 13-gram with one.
    Streams ``train_docs``; the evaluation set is indexed (signatures only) up front. ``config`` supplies
    the MinHash settings; ``threshold`` and ``shared_ngram`` override its decontamination fields.
    """
    config = replace(config or DedupConfig(), contamination_threshold=threshold, shared_ngram=shared_ngram)
    stats = stats if stats is not None else DecontaminationStats()
    checker = Decontaminator(eval_docs, config)
    stats.eval_documents = len(checker)
    for doc in train_docs:
        stats.checked += 1
        verdict = checker.check(doc.text)
        if verdict is None:
            yield doc
            continue
        if verdict.rule == "contaminated_jaccard":
            stats.removed_jaccard += 1
        else:
            stats.removed_ngram += 1
        stats.removed_bytes += len(doc.text.encode("utf-8"))
        if len(stats.examples) < max_examples:
            stats.examples.append({"id": doc.id, "matches": verdict.match, "value": verdict.value})
    log.info(
        "decontamination: %d checked, %d removed by Jaccard, %d by shared n-gram",
        stats.checked, stats.removed_jaccard, stats.removed_ngram,
    )
