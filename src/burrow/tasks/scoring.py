"""The per-document functions the generated task configs name (``!function burrow.tasks.scoring.…``).

Prompts follow lm-evaluation-harness's own tasks where one exists (ARC, PIQA, LAMBADA, Winogrande's
partial scoring, TruthfulQA's QA preamble, MMLU's 5-shot layout), so scores are comparable with
published lm-eval figures; open-book QA puts the retrieved passages before the question in the
``Context: …`` form of the NQ open-book file.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

from burrow.errors import BurrowError

#: TruthfulQA's six-shot QA preamble (Lin et al. 2021; lm-eval's truthfulqa_mc1/mc2 prompt).
TRUTHFULQA_PREAMBLE = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)


def truthfulqa_text(doc: dict[str, Any]) -> str:
    """The preamble, then ``Q: question\\nA:``."""
    return f"{TRUTHFULQA_PREAMBLE}\n\nQ: {doc['question']}\nA:"


def mc2_results(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
    """TruthfulQA MC2: the normalized probability of the true answers (which come first in ``choices``)."""
    lls = [ll for ll, _ in results]
    n_true = sum(doc["mc2_targets"]["labels"])
    top = max(lls)
    p = [math.exp(ll - top) for ll in lls]
    return {"acc": sum(p[:n_true]) / sum(p)}


def winogrande_gold(doc: dict[str, Any]) -> int:
    """Partial scoring: the gold context index (lm-eval's multiple-input form)."""
    return int(doc["gold"])


def winogrande_target(doc: dict[str, Any]) -> str:
    """The shared continuation, scored after each context; lm-eval puts the task's target delimiter (a space)
    before it, so it has none of its own (with one, every continuation began with two spaces)."""
    return doc["continuation"].strip()


def winogrande_choices(doc: dict[str, Any]) -> list[str]:
    """The two filled-in prefixes."""
    return list(doc["contexts"])


def qa_text(doc: dict[str, Any]) -> str:
    """Closed book: ``Question: q\\nAnswer:``; open book: the passages first, as ``Context: …``."""
    if "passages" in doc and doc["passages"] is None:  # open book, but the passages file lacks this question
        raise BurrowError(f"no retrieved passages for the question {doc['question']!r}: the passages file was "
                          "written for fewer questions (`burrow tasks configs --limit`); write it again with the "
                          "limit you evaluate with, or without --limit")
    head = "".join(f"Context: {p}\n\n" for p in doc.get("passages") or [])
    return f"{head}Question: {doc['question']}\nAnswer:"


def normalize_answer(text: str) -> str:
    """SQuAD/TriviaQA normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def qa_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match of the generated answer (first line) against any accepted answer, normalized."""
    pred = normalize_answer(results[0].strip().split("\n")[0])
    return {"exact_match": float(any(pred == normalize_answer(a) for a in doc["answers"]))}


def wikitext_target(doc: dict[str, Any]) -> str:
    """The article, detokenized as lm-eval's wikitext task does."""
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    return str(wikitext_detokenizer(doc))


def wikitext_results(doc: dict[str, Any], results: list[float]) -> dict[str, tuple[float, int]]:
    """(log-likelihood, UTF-8 bytes of the original article) for lm-eval's bits_per_byte aggregation."""
    (loglikelihood,) = results
    return {"bits_per_byte": (loglikelihood, len(doc["page"].encode("utf-8")))}
