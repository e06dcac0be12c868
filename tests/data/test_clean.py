"""Gopher quality and repetition rules at their thresholds, the cleaning pipeline, its output and the CLI."""

from __future__ import annotations

import itertools
import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from burrow.data.clean import RULES, CleanConfig, apply_overrides, clean_corpus, report_paths
from burrow.data.corpus import CorpusConfig, read_corpus
from burrow.data.quality import BULLETS, QUALITY_RULES, QualityConfig, quality_verdict, words_of
from burrow.data.repetition import (
    DUP_NGRAMS,
    REPETITION_RULES,
    TOP_NGRAMS,
    RepetitionConfig,
    repetition_verdict,
)
from burrow.errors import BurrowError

# Distinct two-letter lowercase tokens: filler that repeats nothing.
FILLER = ["".join(p) for p in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=2)]
# Distinct five-letter words for prose-like documents.
WORDS = ["".join(p) for p in itertools.product("bcdfg", "aeiou", "lmnrst", "aeiou", "kpxz")]


def only(rule: str, rules: tuple[str, ...]) -> tuple[str, ...]:
    """Skip list that leaves just ``rule`` switched on."""
    return tuple(r for r in rules if r != rule)


def quality(text: str, rule: str, **kw: float) -> str | None:
    verdict = quality_verdict(text, QualityConfig(**kw), skip=only(rule, QUALITY_RULES))  # type: ignore[arg-type]
    return verdict.rule if verdict else None


def repetition(text: str, rule: str) -> str | None:
    verdict = repetition_verdict(text, RepetitionConfig(), skip=only(rule, REPETITION_RULES))
    return verdict.rule if verdict else None


def prose(n_words: int, start: int = 0) -> str:
    """n distinct words with two stop words among them: passes every rule when n >= 50."""
    words = WORDS[start : start + n_words - 2] + ["the", "of"]
    return " ".join(words)


# ---------------------------------------------------------------- quality rules, inside / outside


def test_clean_prose_passes_every_rule() -> None:
    text = prose(60)
    assert quality_verdict(text, QualityConfig()) is None
    assert repetition_verdict(text, RepetitionConfig()) is None


# (rule, a document at its limit that passes, one just over it that the rule drops, config overrides)
QUALITY_CASES: list[tuple[str, str, str, dict[str, float]]] = [
    ("min_words", prose(50), prose(49), {}),
    ("max_words", prose(100), prose(101), {"max_words": 100}),
    ("min_mean_word_length", " ".join(["abc"] * 10), " ".join(["abc"] * 9 + ["ab"]), {}),
    ("max_mean_word_length", " ".join(["a" * 10] * 10), " ".join(["a" * 10] * 9 + ["a" * 11]), {}),
    # '#' per word: 10 / 100 is at the limit, 11 / 100 over it ("#tag" strips to the word "tag").
    ("hash_ratio", " ".join(["#tag"] * 10 + WORDS[:90]), " ".join(["#tag"] * 11 + WORDS[:89]), {}),
    ("ellipsis_ratio", " ".join(["so..."] * 10 + WORDS[:90]), " ".join(["so…"] * 11 + WORDS[:89]), {}),
    # Fractions of (non-blank) lines: 18 / 20 bullets is the limit 0.9, 19 / 20 over it.
    ("bullet_lines", "\n".join(["• a"] * 18 + ["text"] * 2), "\n".join(["- a"] * 19 + ["text"]), {}),
    ("ellipsis_lines", "\n".join(["so..."] * 3 + ["end"] * 7), "\n".join(["so…"] * 4 + ["end"] * 6), {}),
    ("alpha_words", " ".join(["word"] * 8 + ["1999"] * 2), " ".join(["word"] * 7 + ["3.14"] * 3), {}),
    ("stop_words", "The cat and dog", "Cat and dog", {}),
]


@pytest.mark.parametrize(("rule", "inside", "outside", "kw"), QUALITY_CASES, ids=[c[0] for c in QUALITY_CASES])
def test_quality_rule_threshold(rule: str, inside: str, outside: str, kw: dict[str, float]) -> None:
    assert quality(inside, rule, **kw) is None
    assert quality(outside, rule, **kw) == rule


def test_punctuation_tokens_are_not_words() -> None:
    # 49 words plus punctuation tokens (WikiText style) is still under 50 words.
    text = " , ".join(WORDS[:47]) + " the of @-@ ."
    assert quality(text, "min_words") == "min_words"


@pytest.mark.parametrize("bullet", [b for b in BULLETS if b not in "-*"] + ["→", "▸", "✓"])
def test_bullets_and_symbols_are_not_words(bullet: str) -> None:
    """Punctuation and symbols of any script are stripped from a word's edges (the ASCII list plus a few
    kept `●` `→` `©` as letterless words, so a list with those bullets failed alpha_words where the same list
    with `•` passed)."""
    assert words_of(f"{bullet} red → © apples ● ") == ["red", "apples"]
    assert words_of("«naïve» (x²) don't e-mail") == ["naïve", "x²", "don't", "e-mail"]
    lines = [prose(60)] + [f"{bullet} red apples" if i % 2 else f"{bullet} green pears" for i in range(20)]
    assert quality("\n".join(lines), "alpha_words") is None


def test_quality_reads_decomposed_text_as_composed() -> None:
    """Mean word length counts composed characters: NFD "é" (e + combining accent) is one, not two."""
    text = " ".join(["résumé naïve café déjà entrée"] * 12 + ["the of"])
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    measured = [quality_verdict(t, QualityConfig(max_mean_word_length=5.5), skip=only(
        "max_mean_word_length", QUALITY_RULES)) for t in (text, nfd)]
    assert measured == [None, None]


def parametrized(test: Any) -> list[Any]:
    """The argument values ``test`` is really parametrized with (read from its mark, not retyped)."""
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    return list(mark.args[1])


def test_every_quality_rule_is_tested() -> None:
    tested = [case[0] for case in parametrized(test_quality_rule_threshold)]
    assert sorted(tested) == sorted(QUALITY_RULES), "each quality rule needs exactly one threshold case"


# ---------------------------------------------------------------- repetition rules, inside / outside


def lines(distinct: int, repeats: int, sep: str = "\n") -> str:
    """``distinct`` different 10-character lines, then ``repeats`` copies of the first one."""
    unique = [f"line {w}" for w in WORDS[:distinct]]
    return sep.join(unique + [unique[0]] * repeats)


@pytest.mark.parametrize(("unit", "sep"), [("line", "\n"), ("para", "\n \n")])
def test_duplicate_line_and_paragraph_fraction(unit: str, sep: str) -> None:
    rule = f"dup_{unit}_frac"
    assert repetition(lines(7, 3, sep), rule) is None  # 3 / 10 = 0.30, at the limit
    assert repetition(lines(6, 4, sep), rule) == rule  # 4 / 10 = 0.40


@pytest.mark.parametrize(("unit", "sep"), [("line", "\n"), ("para", "\n\n")])
def test_duplicate_line_and_paragraph_characters(unit: str, sep: str) -> None:
    rule = f"dup_{unit}_chars"
    assert repetition(lines(8, 2, sep), rule) is None  # 20 of 100 characters = 0.20, at the limit
    assert repetition(lines(7, 3, sep), rule) == rule  # 30 / 100


def ngram_doc(n: int, total_tokens: int) -> str:
    """One n-gram of two-character tokens occurring twice, padded with distinct filler tokens."""
    gram = [t.upper() for t in FILLER[-n:]]
    filler = FILLER[: total_tokens - 2 * n]
    half = len(filler) // 2
    return " ".join(gram + filler[:half] + gram + filler[half:])


@pytest.mark.parametrize("n", TOP_NGRAMS)
def test_most_common_ngram_characters(n: int) -> None:
    limit = RepetitionConfig().limit(f"top_{n}gram")
    inside = math.ceil(2 * n / limit)  # both occurrences (2n tokens) of total tokens: <= limit
    assert 2 * n / inside <= limit < 2 * n / (inside - 1)
    assert repetition(ngram_doc(n, inside), f"top_{n}gram") is None
    assert repetition(ngram_doc(n, inside - 1), f"top_{n}gram") == f"top_{n}gram"


@pytest.mark.parametrize("n", DUP_NGRAMS)
def test_duplicated_ngram_characters(n: int) -> None:
    limit = RepetitionConfig().limit(f"dup_{n}gram")
    inside = math.ceil(n / limit - 1e-9)  # the repeat (n tokens) of total tokens: <= limit
    assert n / inside <= limit < n / (inside - 1)
    assert repetition(ngram_doc(n, inside), f"dup_{n}gram") is None
    assert repetition(ngram_doc(n, inside - 1), f"dup_{n}gram") == f"dup_{n}gram"


def test_every_repetition_rule_is_tested() -> None:
    tested = [f"dup_{unit}_frac" for unit, _ in parametrized(test_duplicate_line_and_paragraph_fraction)]
    tested += [f"dup_{unit}_chars" for unit, _ in parametrized(test_duplicate_line_and_paragraph_characters)]
    tested += [f"top_{n}gram" for n in parametrized(test_most_common_ngram_characters)]
    tested += [f"dup_{n}gram" for n in parametrized(test_duplicated_ngram_characters)]
    assert sorted(tested) == sorted(REPETITION_RULES), "each repetition rule needs exactly one threshold case"


def test_overlapping_repeats_count_characters_once() -> None:
    # 40 "x" tokens: the 5-gram "x x x x x" starts at 36 positions, its 35 repeats overlap and cover
    # tokens 1..39 = 39 characters (counting each repeat's 5 characters would give 175).
    text = "x " * 40 + prose(60)  # 40 + 58 * 5 + len("the") + len("of") = 335 characters
    config = RepetitionConfig(max_dup_5gram_chars=0.0)
    verdict = repetition_verdict(text, config, skip=only("dup_5gram", RULES))
    assert verdict is not None and verdict.value == pytest.approx(39 / 335)


# ---------------------------------------------------------------- config


def test_config_validates_and_overrides() -> None:
    with pytest.raises(BurrowError):
        CleanConfig(disabled=("no_such_rule",))
    with pytest.raises(BurrowError):
        QualityConfig(min_words=200, max_words=100)
    with pytest.raises(BurrowError):
        RepetitionConfig(max_dup_line_frac=1.5)
    config = apply_overrides(CleanConfig(), ["min_words=20", "max_top_2gram_chars=0.3", "shared_ngram=yes"])
    assert config.quality.min_words == 20 and isinstance(config.quality.min_words, int)
    assert config.repetition.max_top_2gram_chars == 0.3 and config.dedup.shared_ngram is True
    with pytest.raises(BurrowError):
        apply_overrides(CleanConfig(), ["min_words"])
    with pytest.raises(BurrowError):
        apply_overrides(CleanConfig(), ["min_words=lots"])


# ---------------------------------------------------------------- pipeline, output, atomicity, CLI


def write_jsonl(path: Path, docs: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def sample_corpus(tmp_path: Path) -> Path:
    docs = [
        {"id": "a", "title": "A", "text": prose(80, 0)},
        {"id": "b", "title": "B", "text": prose(80, 100)},
        {"id": "short", "text": "The short text to keep."},
        {"id": "a-copy", "text": prose(80, 0).upper() + " !"},  # exact duplicate after normalisation
        {"id": "c", "text": prose(80, 200) + "\n" + prose(80, 300)},
    ]
    return write_jsonl(tmp_path / "in.jsonl", docs)


def test_clean_round_trips_through_read_corpus(tmp_path: Path) -> None:
    out = tmp_path / "out" / "clean.jsonl.gz"
    report = clean_corpus([sample_corpus(tmp_path)], out)
    assert (report.documents_in, report.documents_kept) == (5, 3)
    assert report.removed["min_words"].documents == 1 and report.removed["exact_duplicate"].documents == 1
    back = list(read_corpus([out]))
    assert [d.id for d in back] == ["a", "b", "c"]
    assert back[0].title == "A" and back[0].text == prose(80, 0)
    originals = {d.id: d for d in read_corpus([tmp_path / "in.jsonl"])}
    assert all(d.text == originals[d.id].text for d in back)
    md, js = report_paths(out)
    assert md.name == "clean.report.md" and "exact_duplicate" in md.read_text()
    data = json.loads(js.read_text())
    assert data["removed"]["min_words"]["examples"][0]["id"] == "short"
    assert data["removed"]["exact_duplicate"]["bytes"] == len(prose(80, 0).upper() + " !")


def test_output_keeps_source_field(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"
    clean_corpus([sample_corpus(tmp_path)], out)
    record = json.loads(out.read_text().splitlines()[0])
    assert set(record) == {"text", "id", "source", "title"} and record["source"].endswith("in.jsonl:line 1")


def test_killed_run_leaves_no_output(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"

    def boom(doc: object, verdict: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        clean_corpus([sample_corpus(tmp_path)], out, on_document=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_rules_can_be_switched_off(tmp_path: Path) -> None:
    config = CleanConfig(disabled=("min_words", "exact_duplicate", "near_duplicate"))
    report = clean_corpus([sample_corpus(tmp_path)], tmp_path / "o.jsonl", config)
    assert report.documents_kept == 5 and not report.removed


@pytest.fixture(scope="module")
def cli_app():  # type: ignore[no-untyped-def]
    from burrow.cli import app

    return app


def test_cli_clean(tmp_path: Path, cli_app) -> None:  # type: ignore[no-untyped-def]
    corpus = sample_corpus(tmp_path)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [{"id": "e", "text": prose(80, 100)}])
    out = tmp_path / "clean.jsonl"
    args = ["corpus", "clean", str(corpus), "-o", str(out), "--against", str(eval_file)]
    args += ["--set", "min_words=3"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    kept = [d.id for d in read_corpus([out])]
    assert kept == ["a", "short", "c"]  # b is the eval document, a-copy a duplicate of a
    assert "contaminated_jaccard" in json.loads(report_paths(out)[1].read_text())["removed"]
    bad = CliRunner().invoke(cli_app, ["corpus", "clean", str(corpus), "-o", str(out), "--disable", "nope"])
    assert isinstance(bad.exception, BurrowError)


def test_text_field_option(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"extract": prose(60), "title": "T"}])
    report = clean_corpus([path], tmp_path / "o.jsonl", corpus_config=CorpusConfig(text_field="extract"))
    assert report.documents_kept == 1


def test_overrides_are_checked_together_and_in_range() -> None:
    """`--set bands=… --set rows=…` sets both before checking (one at a time, each alone was refused);
    MinHash's own limits are one error line, not datasketch's ValueError."""
    config = apply_overrides(CleanConfig(), ["bands=16", "rows=8"])
    assert (config.dedup.bands, config.dedup.rows) == (16, 8)
    for bad in (["num_perm=0"], ["num_perm=1"], ["seed=-1"], ["bands=16"], ["bands=300", "rows=300"],
                ["max_hash_ratio=nan"], ["max_ellipsis_ratio=NaN"], ["threshold=nan"]):
        with pytest.raises(BurrowError):
            apply_overrides(CleanConfig(), bad)


def test_an_output_under_a_file_or_a_read_only_folder_is_one_error_line(  # type: ignore[no-untyped-def]
        tmp_path: Path, burrow_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o afile/clean.jsonl` (a file where the folder should be) is refused before any work, and a folder
    the user may not write is one line too (both were tracebacks: FileExistsError, PermissionError)."""
    corpus = sample_corpus(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("hi\n", encoding="utf-8")
    code, _, err = burrow_cli("corpus", "clean", corpus, "-o", afile / "clean.jsonl")
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert f"{afile} is a file" in err
    assert afile.read_text(encoding="utf-8") == "hi\n"
    # A folder the user may not write (tests run as root, which writes anywhere: the OS's error is raised
    # where the output is opened)
    import errno

    import burrow.cli.corpus as corpus_cli

    locked = tmp_path / "locked" / "clean.jsonl"

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(locked))

    monkeypatch.setattr(corpus_cli, "clean_corpus", denied)
    code, _, err = burrow_cli("corpus", "clean", corpus, "-o", locked)
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert f"{locked}: Permission denied" in err
