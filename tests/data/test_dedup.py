"""Exact and MinHash deduplication, the LSH bands/rows choice, and test-set decontamination."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from burrow.data.clean import CleanConfig, Cleaner, apply_overrides
from burrow.data.corpus import Document
from burrow.data.dedup import (
    DecontaminationStats,
    DedupConfig,
    MinHasher,
    NearDuplicateIndex,
    candidate_probability,
    content_hash,
    decontaminate,
    lsh_params,
    shingle_hashes,
)
from burrow.errors import BurrowError

VOCAB = [f"w{i}x" for i in range(20_000)]


def random_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n)]


def perturb(words: list[str], fraction: float, seed: int, spread: bool = True) -> list[str]:
    """A copy with ``fraction`` of its words replaced by unused words, evenly spread or at random places."""
    out = list(words)
    rng = random.Random(seed)
    if spread:
        step = max(1, round(1 / fraction))
        positions = list(range(step // 2, len(out), step))
    else:
        positions = rng.sample(range(len(out)), round(fraction * len(out)))
    for i in positions:
        out[i] = f"changed{rng.randrange(10**9)}"
    return out


def shingle_jaccard(a: str, b: str) -> float:
    sa, sb = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    return len(sa & sb) / len(sa | sb)


def test_lsh_curve_finds_pairs_at_the_threshold() -> None:
    """The LSH stage must not decide the rule: a pair at the threshold is a candidate with probability
    ≥ 0.99 (a curve centred on 0.8 found half of them, and 18 % of pairs at 0.85 were never compared)."""
    bands, rows = lsh_params(0.8, 256)
    assert (bands, rows) == (26, 8)
    assert candidate_probability(0.8, bands, rows) >= 0.99
    assert candidate_probability(0.5, bands, rows) < 0.15  # few candidates far below (each costs one compare)
    for threshold, num_perm in itertools.product((0.5, 0.8, 0.95, 1.0), (2, 3, 4, 16, 128, 256)):
        b, r = lsh_params(threshold, num_perm)
        assert b >= 2 and b * r <= num_perm  # datasketch refuses fewer than 2 bands
    assert DedupConfig(bands=20, rows=6).lsh(0.8) == (20, 6)


@pytest.mark.parametrize("overrides", [["threshold=1.0"], ["num_perm=3"], ["num_perm=2"], ["bands=1", "rows=5"],
                                       ["bands=0", "rows=5"], ["contamination_threshold=0.999"]])
def test_every_accepted_lsh_setting_builds_an_index(overrides: list[str]) -> None:
    """Settings the config accepts build datasketch's index (1 band was its ValueError, a traceback);
    settings it cannot build are one BurrowError."""
    try:
        config = apply_overrides(CleanConfig(), overrides)
    except BurrowError:
        assert overrides[0].startswith("bands=")  # explicit bands < 2 are refused with the reason
        return
    Cleaner(config, [Document("e", " ".join(random_words(50, seed=1)), "e")])


def test_exact_hash_ignores_case_punctuation_and_spacing() -> None:
    assert content_hash("Hello,  World!\n") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello word")


def signature_pairs(jaccard: float, count: int, size: int = 600) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shingle-hash sets of two documents with exactly the given Jaccard similarity."""
    shared = round(2 * size * jaccard / (1 + jaccard))  # |A∩B| / (2 size − |A∩B|) = jaccard
    rng = np.random.default_rng(int(jaccard * 1000))
    pairs = []
    for _ in range(count):
        pool = rng.choice(2**62, size=2 * size, replace=False).astype(np.uint64)
        a = pool[:size]
        b = np.concatenate([a[:shared], pool[size : 2 * size - shared]])
        pairs.append((a, b))
    return pairs


@pytest.mark.parametrize(("jaccard", "should_match"),
                         [(0.5, False), (0.7, False), (0.85, True), (0.9, True), (0.95, True)])
def test_minhash_recall_and_precision(jaccard: float, should_match: bool) -> None:
    config = DedupConfig()
    hasher = MinHasher(config.num_perm, config.seed)
    pairs = signature_pairs(jaccard, count=40)
    matched = 0
    for a, b in pairs:
        index = NearDuplicateIndex(config.threshold, config)
        index.add("a", hasher(a))
        matched += index.match(hasher(b)) is not None
    rate = matched / len(pairs)
    if should_match:  # at 0.85 the estimate (σ ≈ 0.023) is ≥ 0.8 for ~98 % of pairs
        assert rate >= 0.9, f"recall {rate} at Jaccard {jaccard}"
    else:
        assert rate <= 0.05, f"false-positive rate {rate} at Jaccard {jaccard}"


def judge_all(cleaner: Cleaner, texts: list[str]) -> list[str | None]:
    out = []
    for i, text in enumerate(texts):
        verdict = cleaner.judge(Document(f"d{i}", text, f"test:{i}"))
        out.append(verdict.rule if verdict else None)
    return out


def test_near_duplicates_keep_the_first_of_each_cluster() -> None:
    base = random_words(400, seed=1)
    near = " ".join(perturb(base, 1 / 200, seed=2))  # 13-gram Jaccard ≈ 0.88
    far = " ".join(perturb(base, 0.2, seed=3))  # ≈ 0.03
    assert shingle_jaccard(" ".join(base), near) == pytest.approx(0.88, abs=0.02)
    only_dedup = tuple(r for r in CleanConfig().disabled) + ("min_words", "stop_words", "dup_5gram")
    texts = [" ".join(base), near, far, " ".join(random_words(400, seed=4))]
    config = CleanConfig(disabled=only_dedup)
    first = judge_all(Cleaner(config), texts)
    assert first == [None, "near_duplicate", None, None]
    assert judge_all(Cleaner(config), texts) == first  # deterministic
    # The other order keeps the other document of the cluster.
    assert judge_all(Cleaner(config), [near, " ".join(base)]) == [None, "near_duplicate"]


def test_decontaminate_jaccard_and_shared_ngram() -> None:
    eval_words = random_words(400, seed=10)
    eval_doc = Document("eval-1", " ".join(eval_words), "eval:1")
    one_in_200 = Document("train-near", " ".join(perturb(eval_words, 1 / 200, seed=11)), "t:1")
    # 20 % of words changed at random places: Jaccard ≈ 0.03, but some 13-grams survive intact.
    twenty_pct = Document("train-20pct", " ".join(perturb(eval_words, 0.2, seed=12, spread=False)), "t:2")
    clean = Document("train-clean", " ".join(random_words(400, seed=13)), "t:3")
    train = [one_in_200, twenty_pct, clean]

    stats = DecontaminationStats()
    kept = [d.id for d in decontaminate(train, [eval_doc], threshold=0.8, stats=stats)]
    assert kept == ["train-20pct", "train-clean"]
    assert (stats.checked, stats.removed_jaccard, stats.removed_ngram) == (3, 1, 0)
    assert stats.examples[0]["matches"] == "eval-1"

    stats = DecontaminationStats()
    kept = [d.id for d in decontaminate(train, [eval_doc], shared_ngram=True, stats=stats)]
    assert kept == ["train-clean"]
    assert (stats.removed_jaccard, stats.removed_ngram) == (1, 1)


def test_short_documents_shingle_as_one_gram() -> None:
    assert shingle_hashes("a b c").size == 1
    assert shingle_hashes("").size == 0
    assert shingle_hashes(" ".join(VOCAB[:20])).size == 20 - 13 + 1


def test_copies_of_a_dropped_document_keep_its_verdict() -> None:
    """A copy of a contaminated (or near-duplicate) document is counted under that rule, not as an exact
    duplicate of it (its key was stored before it was judged); an exact duplicate names the kept original."""
    eval_words = random_words(400, seed=20)
    evaluation = Document("eval-1", " ".join(eval_words), "eval:1")
    only_dedup = ("min_words", "stop_words", "dup_5gram")
    cleaner = Cleaner(CleanConfig(disabled=only_dedup), [evaluation])
    contaminated = " ".join(perturb(eval_words, 1 / 200, seed=21))
    base = " ".join(random_words(400, seed=22))
    near = " ".join(perturb(base.split(), 1 / 200, seed=23))
    texts = [contaminated, contaminated + " !", base, near, near.upper(), base + "."]
    verdicts = [cleaner.judge(Document(f"d{i}", t, f"t:{i}")) for i, t in enumerate(texts)]
    rules = [v.rule if v else None for v in verdicts]
    assert rules == ["contaminated_jaccard", "contaminated_jaccard", None, "near_duplicate", "near_duplicate",
                     "exact_duplicate"]
    assert [v.match for v in verdicts if v] == ["eval-1", "eval-1", "d2", "d2", "d2"]
