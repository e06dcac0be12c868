"""Read each task's file from the data directory into lm-eval documents; nothing is downloaded.

lm-eval calls :func:`custom_dataset` (named by every generated task config, ``custom_dataset:
!function burrow.tasks.datasets.custom_dataset``) with the task's ``dataset_kwargs``: the burrow task
name, the data directory and, for open-book tasks, the file of retrieved passages
(:mod:`burrow.tasks.openbook`). Every loader returns plain dicts with one fixed schema per task.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path
from typing import Any

from burrow.errors import BurrowError
from burrow.tasks.catalog import MMLU_SUBJECTS, TaskSpec, get_task

#: A top-level WikiText heading (`` = Title = ``) starts a new article.
_ARTICLE = re.compile(r"^ = [^=].* = $")


def data_file(data_dir: Path, relative: str) -> Path:
    """``data_dir / relative``; a one-line error naming the fix when it is missing."""
    path = Path(data_dir) / relative
    if not path.exists():
        raise BurrowError(f"task file {path} is missing; pass --data DIR with the shared data layout "
                          f"(DIR/{relative})")
    return path


def check_files(spec: TaskSpec, data_dir: Path) -> None:
    """Raise unless every file ``spec`` reads is under ``data_dir``."""
    for rel in spec.files:
        data_file(data_dir, rel)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _question_text(query: str) -> str:
    """``Question: …\\nAnswer:`` from the files' ``Question: …`` queries (ARC, PIQA), as lm-eval prompts them."""
    q = query.strip()
    return q if q.endswith("Answer:") else f"{q}\nAnswer:"


def load_multiple_choice(path: Path) -> list[dict[str, Any]]:
    """ARC / PIQA rows: ``{"query", "choices", "gold"}``."""
    return [{"query": _question_text(r["query"]), "choices": list(r["choices"]), "gold": int(r["gold"])}
            for r in _jsonl(path)]


def load_winogrande(path: Path) -> list[dict[str, Any]]:
    """Partial-scoring rows: ``{"contexts": [prefix with option 1, with option 2], "continuation", "gold"}``."""
    return [{"contexts": list(r["context_options"]), "continuation": r["continuation"], "gold": int(r["gold"])}
            for r in _jsonl(path)]


def _targets(d: dict[str, int]) -> dict[str, list[Any]]:
    """TruthfulQA's {answer: 0/1} as {"choices", "labels"}, true answers first (the mc2 score needs it)."""
    items = sorted(d.items(), key=lambda kv: -int(kv[1]))
    return {"choices": [a for a, _ in items], "labels": [int(v) for _, v in items]}


def load_truthfulqa(path: Path) -> list[dict[str, Any]]:
    """TruthfulQA MC rows: ``{"question", "mc1_targets", "mc2_targets"}`` (choices + labels)."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    return [{"question": r["question"], "mc1_targets": _targets(r["mc1_targets"]),
             "mc2_targets": _targets(r["mc2_targets"])} for r in rows]


def load_mmlu(directory: Path, split: str, subject: str) -> list[dict[str, Any]]:
    """One MMLU subject's rows: ``{"question", "choices", "answer", "subject"}``."""
    path = directory / split / f"{subject}_{split}.csv"
    if not path.exists():
        raise BurrowError(f"task file {path} is missing; pass --data DIR with the shared data layout")
    with open(path, encoding="utf-8", newline="") as f:
        return [{"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)],
                 "answer": int(r["answer"]), "subject": subject} for r in csv.DictReader(f)]


def load_qa(path: Path, aliases: bool) -> list[dict[str, Any]]:
    """NQ / TriviaQA rows: ``{"question", "answers"}`` (the answer, plus its aliases where they are reliable)."""
    rows = []
    for r in _jsonl(path):
        q = r["context"].removeprefix("Question:").removesuffix("Answer:").strip()
        answers = [r["answer"], *(r.get("aliases") or [])] if aliases else [r["answer"]]
        rows.append({"question": q, "answers": list(dict.fromkeys(a for a in answers if a))})
    return rows


def load_wikitext(path: Path) -> list[dict[str, Any]]:
    """WikiText raw test as one document per article: ``{"page"}`` (lines kept, as lm-eval's document level)."""
    pages: list[list[str]] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if _ARTICLE.match(line.rstrip("\n")) or not pages:
                pages.append([])
            pages[-1].append(line)
    return [{"page": "".join(p)} for p in pages if "".join(p).strip()]


def load_passages(path: Path) -> dict[str, list[str]]:
    """Open-book passages: question -> retrieved passage texts (written by :mod:`burrow.tasks.openbook`)."""
    return {r["question"]: r["passages"] for r in _jsonl(path)}


def load_docs(task: str, data_dir: str | Path, passages: str | Path | None = None,
              subject: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Split name -> rows of burrow task ``task`` (MMLU: one ``subject``'s dev and test)."""
    spec, root = get_task(task), Path(data_dir)
    if task == "mmlu":
        if subject not in MMLU_SUBJECTS:
            raise BurrowError(f"unknown MMLU subject {subject!r}")
        return {"dev": load_mmlu(root / "mmlu", "dev", subject), "test": load_mmlu(root / "mmlu", "test", subject)}
    path = data_file(root, spec.files[0])
    if task == "wikitext":
        rows = load_wikitext(path)
    elif task == "lambada":
        rows = _jsonl(path)
    elif task in ("arc_easy", "arc_challenge", "piqa"):
        rows = load_multiple_choice(path)
    elif task == "winogrande":
        rows = load_winogrande(path)
    elif task.startswith("truthfulqa"):
        rows = load_truthfulqa(path)
    else:  # nq_* / triviaqa_*: NQ's aliases are noisy (other entities of the passage): its answer only
        rows = load_qa(path, aliases=task.startswith("triviaqa"))
        if spec.needs_memory:
            if passages is None:
                raise BurrowError(f"{task} puts the memory's passages in the prompt: pass --memory DIR")
            found = load_passages(Path(passages))
            rows = [{**r, "passages": found.get(r["question"], [])} for r in rows]
    return {"test": rows}


def custom_dataset(task: str, data_dir: str, passages: str | None = None, subject: str | None = None,
                   **_: Any) -> Any:
    """lm-eval's ``custom_dataset`` hook: a ``DatasetDict`` of the task's splits (extra metadata ignored)."""
    import datasets

    splits = load_docs(task, data_dir, passages, subject)
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


def chance_of(spec: TaskSpec, data_dir: Path) -> float | None:
    """The headline metric of a uniform guess: the catalogue's, or from the data where choices vary (TruthfulQA)."""
    if not spec.name.startswith("truthfulqa"):
        return spec.chance
    rows = load_truthfulqa(data_file(data_dir, spec.files[0]))
    key = "mc1_targets" if spec.name.endswith("mc1") else "mc2_targets"
    # mc1: 1 / n choices; mc2 (probability mass on true answers) under equal probabilities: n_true / n
    return sum(sum(r[key]["labels"]) / len(r[key]["labels"]) for r in rows) / len(rows)
