"""The per-document scoring and the result extraction, against hand computations."""

from __future__ import annotations

import gzip
import math

import pytest


def test_mc2_is_the_normalized_mass_on_the_true_answers():
    from burrow.tasks.scoring import mc2_results

    doc = {"mc2_targets": {"choices": ["t1", "t2", "f1"], "labels": [1, 1, 0]}}
    results = [(math.log(0.5), False), (math.log(0.25), False), (math.log(0.25), True)]
    assert mc2_results(doc, results)["acc"] == pytest.approx(0.75)


def test_exact_match_normalizes_case_punctuation_and_articles():
    from burrow.tasks.scoring import qa_results

    doc = {"answers": ["Mount Etna", "Etna"]}
    assert qa_results(doc, [" the Mount etna.\nmore"])["exact_match"] == 1.0
    assert qa_results(doc, ["Sicily"])["exact_match"] == 0.0


def test_mmlu_accuracy_is_the_macro_average_over_subjects():
    from burrow.tasks import MMLU_SUBJECTS, get_task
    from burrow.tasks.catalog import lm_eval_names
    from burrow.tasks.runner import extract

    spec = get_task("mmlu")
    accs = {s: (1.0 if i % 3 == 0 else 0.0) for i, s in enumerate(MMLU_SUBJECTS)}
    res = {"results": {n: {"acc,none": accs[s], "acc_stderr,none": 0.1} for s, n in
                       zip(MMLU_SUBJECTS, lm_eval_names(spec), strict=True)},
           "n-samples": {n: {"effective": 1 + i} for i, n in enumerate(lm_eval_names(spec))}}
    out = extract(spec, res)
    assert out["acc"] == pytest.approx(sum(accs.values()) / 57) and out["n"] == sum(range(1, 58))
    stem = [s for s, c in MMLU_SUBJECTS.items() if c == "stem"]
    assert out["acc_stem"] == pytest.approx(sum(accs[s] for s in stem) / len(stem))
    assert out["acc_stderr"] == pytest.approx(math.sqrt(57 * 0.01) / 57)


def test_wikitext_is_split_into_articles_at_top_level_headings(tmp_path):
    from burrow.tasks.datasets import load_wikitext

    path = tmp_path / "w.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(" = One = \n text one \n = = Section = = \n more one \n = Two = \n text two \n")
    pages = load_wikitext(path)
    assert [p["page"].splitlines()[0] for p in pages] == [" = One = ", " = Two = "]
    assert "more one" in pages[0]["page"]


def test_wikitext_bits_are_per_byte_of_the_stored_article_and_the_report_says_so():
    """lm-eval's count: the UTF-8 bytes of the article as stored (" @-@ ", spaces before punctuation), more than
    those of the detokenized text the model reads, so the figure sits below `burrow eval`'s bits per byte of that
    text; the report's format note says so."""
    from burrow.tasks.catalog import TASKS
    from burrow.tasks.scoring import wikitext_results, wikitext_target

    doc = {"page": " = A = \n The 1 @-@ 2 match , in 2000 . \n"}
    ((_, nbytes),) = wikitext_results(doc, [-10.0]).values()
    assert nbytes == len(doc["page"].encode("utf-8")) > len(wikitext_target(doc).encode("utf-8"))
    assert "byte of the article as stored" in TASKS["wikitext"].note


def test_lm_eval_builds_the_requests_with_one_space_before_each_continuation(task_data, tmp_path):
    """Through lm-eval's own request building: Winogrande's shared continuation and LAMBADA's word follow
    their contexts after exactly one space (Winogrande's had two: lm-eval adds the delimiter itself)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from burrow.tasks.catalog import get_task
    from burrow.tasks.configs import write_configs

    out = write_configs([get_task("winogrande"), get_task("lambada")], task_data, tmp_path / "cfg")
    tasks = get_task_dict(["burrow_winogrande", "burrow_lambada"], TaskManager(include_path=str(out),
                                                                                include_defaults=False))
    for name, task in tasks.items():
        task.build_all_requests(limit=1, rank=0, world_size=1)
        for inst in task.instances:
            context, continuation = inst.args[0], inst.args[1]
            assert continuation.startswith(" ") and not continuation.startswith("  "), (name, continuation)
            assert not context.endswith(" "), (name, context)
    wino = [inst.args for inst in tasks["burrow_winogrande"].instances]
    assert wino == [("The owl caught the mouse because the owl", " was hungry."),
                    ("The owl caught the mouse because the mouse", " was hungry.")]


def test_an_open_book_question_without_passages_is_an_error_not_a_closed_book_question(task_data, tmp_path):
    import json

    from burrow.errors import BurrowError
    from burrow.tasks.datasets import load_docs
    from burrow.tasks.scoring import qa_text

    passages = tmp_path / "nq_open.jsonl"  # written for the first question only (`tasks configs --limit 1`)
    passages.write_text(json.dumps({"question": "Which volcano erupts often in Sicily?",
                                    "passages": ["Etna is on Sicily."]}) + "\n", encoding="utf-8")
    rows = load_docs("nq_open", str(task_data), str(passages))["test"]
    assert qa_text(rows[0]).startswith("Context: Etna is on Sicily.\n\nQuestion: Which volcano")
    with pytest.raises(BurrowError, match="no retrieved passages for the question"):
        qa_text(rows[1])
    closed = load_docs("nq_closed", str(task_data))["test"]
    assert qa_text(closed[1]).startswith("Question: How many pieces")


def test_truthfulqa_chance_is_over_the_questions_scored(tmp_path):
    import json

    from burrow.tasks.catalog import get_task
    from burrow.tasks.datasets import chance_of

    rows = [{"question": "a?", "mc1_targets": {"x": 1, "y": 0}, "mc2_targets": {"x": 1, "y": 0}},
            {"question": "b?", "mc1_targets": {"x": 1, "y": 0, "z": 0, "w": 0}, "mc2_targets": {"x": 1, "y": 0}}]
    (tmp_path / "truthfulqa").mkdir()
    (tmp_path / "truthfulqa" / "mc_task_v0_817.json").write_text(json.dumps(rows), encoding="utf-8")
    spec = get_task("truthfulqa_mc1")
    assert chance_of(spec, tmp_path) == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert chance_of(spec, tmp_path, limit=1) == pytest.approx(1 / 2)
