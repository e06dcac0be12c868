"""Read each task's file from the data directory into lm-eval documents; nothing is downloaded.

lm-eval calls :func:`custom_dataset` (named by every generated task config, ``custom_dataset:
!function burrow.tasks.datasets.custom_dataset``) with the task's ``dataset_kwargs``: the burrow task
name, the data directory and, for open-book tasks, the file of retrieved passages
(:mod:`burrow.tasks.openbook`). Every loader returns plain dicts with one fixed schema per task.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from burrow.errors import BurrowError, first_line
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


_FIX = "replace it with an intact copy (see the data's SOURCE.md) or pass --data DIR with one"


def _damaged(path: Path, what: str, where: str = "", fix: str = _FIX) -> BurrowError:
    return BurrowError(f"task file {path}{where} {what}; {fix}")


@contextlib.contextmanager
def _reading(path: Path, fix: str = _FIX) -> Iterator[None]:
    """Turn a task file that cannot be read as text (a folder, not UTF-8, not gzip) into one line naming it."""
    try:
        yield
    except UnicodeDecodeError:
        raise _damaged(path, "is not UTF-8 text", fix=fix) from None
    except (OSError, EOFError, zlib.error, csv.Error) as e:
        what = "is a folder, not a file" if isinstance(e, IsADirectoryError) else f"cannot be read ({first_line(e)})"
        raise _damaged(path, what, fix=fix) from None


def _jsonl(path: Path, fix: str = _FIX) -> list[tuple[str, Any]]:
    """(``", line N"``, parsed JSON) of every non-blank line."""
    items = []
    with _reading(path, fix), open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append((f", line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise _damaged(path, f"is not valid JSON ({e.msg})", f", line {n}", fix) from None
    return items


def _rows(path: Path, items: list[tuple[str, Any]], make: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """``make`` of every (where, raw row); a missing field, a wrong type or value, or no rows at all is one
    line naming the file and the row."""
    rows = []
    for where, raw in items:
        try:
            rows.append(make(raw))
        except KeyError as e:
            raise _damaged(path, f"has no field {e.args[0]!r}", where) from None
        except (TypeError, ValueError, AttributeError, IndexError) as e:
            raise _damaged(path, f"is not a valid row ({first_line(e)})", where) from None
    if not rows:
        raise _damaged(path, "holds no rows (empty)")
    return rows


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _texts(value: Any) -> list[str]:
    """A non-empty list of texts (the choices of a question)."""
    if not isinstance(value, list) or not value:
        raise TypeError("expected a non-empty list of texts")
    return [_text(v) for v in value]


def _index(value: Any, choices: list[str]) -> int:
    """The gold answer's index into ``choices``."""
    i = int(value)
    if not 0 <= i < len(choices):
        raise ValueError(f"gold {i} is not one of the {len(choices)} choices")
    return i


def _question_text(query: str) -> str:
    """``Question: …\\nAnswer:`` from the files' ``Question: …`` queries (ARC, PIQA), as lm-eval prompts them."""
    q = query.strip()
    return q if q.endswith("Answer:") else f"{q}\nAnswer:"


def _multiple_choice(r: dict[str, Any]) -> dict[str, Any]:
    choices = _texts(r["choices"])
    return {"query": _question_text(_text(r["query"])), "choices": choices, "gold": _index(r["gold"], choices)}


def load_multiple_choice(path: Path) -> list[dict[str, Any]]:
    """ARC / PIQA rows: ``{"query", "choices", "gold"}``."""
    return _rows(path, _jsonl(path), _multiple_choice)


def _winogrande(r: dict[str, Any]) -> dict[str, Any]:
    contexts = _texts(r["context_options"])
    return {"contexts": contexts, "continuation": _text(r["continuation"]), "gold": _index(r["gold"], contexts)}


def load_winogrande(path: Path) -> list[dict[str, Any]]:
    """Partial-scoring rows: ``{"contexts": [prefix with option 1, with option 2], "continuation", "gold"}``."""
    return _rows(path, _jsonl(path), _winogrande)


def _lambada(r: dict[str, Any]) -> dict[str, Any]:
    return {"context": _text(r["context"]), "continuation": _text(r["continuation"])}


def _targets(d: Any) -> dict[str, list[Any]]:
    """TruthfulQA's {answer: 0/1} as {"choices", "labels"}, true answers first (the mc2 score needs it)."""
    labels = {a: int(v) for a, v in d.items()}
    if 1 not in labels.values() or not set(labels.values()) <= {0, 1}:
        raise ValueError("targets must map answers to 1 (true, at least one) or 0")
    items = sorted(labels.items(), key=lambda kv: -kv[1])
    return {"choices": [a for a, _ in items], "labels": [v for _, v in items]}


def _truthfulqa(r: dict[str, Any]) -> dict[str, Any]:
    return {"question": _text(r["question"]), "mc1_targets": _targets(r["mc1_targets"]),
            "mc2_targets": _targets(r["mc2_targets"])}


def load_truthfulqa(path: Path) -> list[dict[str, Any]]:
    """TruthfulQA MC rows: ``{"question", "mc1_targets", "mc2_targets"}`` (choices + labels)."""
    with _reading(path), open(path, encoding="utf-8") as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as e:
            raise _damaged(path, f"is not valid JSON ({e.msg})", f", line {e.lineno}") from None
    if not isinstance(rows, list):
        raise _damaged(path, "is not a JSON list of questions")
    return _rows(path, [(f", question {i}", r) for i, r in enumerate(rows, 1)], _truthfulqa)


def load_mmlu(directory: Path, split: str, subject: str) -> list[dict[str, Any]]:
    """One MMLU subject's rows: ``{"question", "choices", "answer", "subject"}``."""
    path = directory / split / f"{subject}_{split}.csv"
    if not path.exists():
        raise BurrowError(f"task file {path} is missing; pass --data DIR with the shared data layout")

    def make(r: dict[str, Any]) -> dict[str, Any]:
        choices = [_text(r[f"choice{i}"]) for i in range(4)]
        return {"question": _text(r["question"]), "choices": choices, "answer": _index(r["answer"], choices),
                "subject": subject}

    with _reading(path), open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        items = [(f", line {reader.line_num}", r) for r in reader]
    return _rows(path, items, make)


def load_qa(path: Path, aliases: bool) -> list[dict[str, Any]]:
    """NQ / TriviaQA rows: ``{"question", "answers"}`` (the answer, plus its aliases where they are reliable)."""

    def make(r: dict[str, Any]) -> dict[str, Any]:
        q = _text(r["context"]).removeprefix("Question:").removesuffix("Answer:").strip()
        answers = [_text(r["answer"]), *(_texts(r["aliases"]) if aliases and r.get("aliases") else [])]
        found = list(dict.fromkeys(a for a in answers if a))
        if not found:
            raise ValueError("no answer")
        return {"question": q, "answers": found}

    return _rows(path, _jsonl(path), make)


def load_wikitext(path: Path) -> list[dict[str, Any]]:
    """WikiText raw test as one document per article: ``{"page"}`` (lines kept, as lm-eval's document level)."""
    pages: list[list[str]] = []
    with _reading(path), gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if _ARTICLE.match(line.rstrip("\n")) or not pages:
                pages.append([])
            pages[-1].append(line)
    return _rows(path, [("", "".join(p)) for p in pages if "".join(p).strip()], lambda page: {"page": page})


def load_passages(path: Path) -> dict[str, list[str]]:
    """Open-book passages: question -> retrieved passage texts (written by :mod:`burrow.tasks.openbook`)."""
    fix = "delete it and re-run: it is retrieved again from the memory"
    try:
        return {r["question"]: r["passages"] for _, r in _jsonl(path, fix)}
    except (KeyError, TypeError):
        raise _damaged(path, "is not a passages file", fix=fix) from None


def _load(task: str, path: Path) -> list[dict[str, Any]]:
    """The rows of burrow task ``task`` (not MMLU) from its file ``path``, before any open-book passages."""
    if task == "wikitext":
        return load_wikitext(path)
    if task == "lambada":
        return _rows(path, _jsonl(path), _lambada)
    if task in ("arc_easy", "arc_challenge", "piqa"):
        return load_multiple_choice(path)
    if task == "winogrande":
        return load_winogrande(path)
    if task.startswith("truthfulqa"):
        return load_truthfulqa(path)
    # nq_* / triviaqa_*: NQ's aliases are noisy (other entities of the passage): its answer only
    return load_qa(path, aliases=task.startswith("triviaqa"))


def check_data(specs: list[TaskSpec], data_dir: Path) -> None:
    """Raise unless every file of ``specs`` is there (all are looked for first), then unless each holds its
    task's rows (fields present, gold in range, not empty): one line naming the file, before lm-eval starts."""
    for spec in specs:
        check_files(spec, data_dir)
    for spec in specs:
        if spec.name == "mmlu":
            for subject in MMLU_SUBJECTS:
                load_docs("mmlu", data_dir, subject=subject)
        else:
            _load(spec.name, data_file(data_dir, spec.files[0]))


def load_docs(task: str, data_dir: str | Path, passages: str | Path | None = None,
              subject: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Split name -> rows of burrow task ``task`` (MMLU: one ``subject``'s dev and test)."""
    spec, root = get_task(task), Path(data_dir)
    if task == "mmlu":
        if subject not in MMLU_SUBJECTS:
            raise BurrowError(f"unknown MMLU subject {subject!r}")
        return {"dev": load_mmlu(root / "mmlu", "dev", subject), "test": load_mmlu(root / "mmlu", "test", subject)}
    rows = _load(task, data_file(root, spec.files[0]))
    if spec.needs_memory:
        if passages is None:
            raise BurrowError(f"{task} puts the memory's passages in the prompt: pass --memory DIR")
        found = load_passages(Path(passages))
        # None: a question the passages file does not cover (written with a smaller --limit); scoring it is
        # an error (scoring.qa_text), never a silent closed-book question inside an open-book task
        rows = [{**r, "passages": found.get(r["question"])} for r in rows]
    return {"test": rows}


def custom_dataset(task: str, data_dir: str, passages: str | None = None, subject: str | None = None,
                   **_: Any) -> Any:
    """lm-eval's ``custom_dataset`` hook: a ``DatasetDict`` of the task's splits (extra metadata ignored)."""
    import datasets

    splits = load_docs(task, data_dir, passages, subject)
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


def chance_of(spec: TaskSpec, data_dir: Path, limit: int | None = None) -> float | None:
    """The headline metric of a uniform guess: the catalogue's, or from the data where choices vary (TruthfulQA:
    over the first ``limit`` questions, those scored)."""
    if not spec.name.startswith("truthfulqa"):
        return spec.chance
    rows = load_truthfulqa(data_file(data_dir, spec.files[0]))[:limit]
    key = "mc1_targets" if spec.name.endswith("mc1") else "mc2_targets"
    # mc1: 1 / n choices; mc2 (probability mass on true answers) under equal probabilities: n_true / n
    return sum(sum(r[key]["labels"]) / len(r[key]["labels"]) for r in rows) / len(rows)
