"""Open-book QA: each question's nearest memory passages, retrieved once and kept beside the results.

The question text is encoded with the memory's frozen encoder and searched in its index (the same
:meth:`Memory.search` every stage uses); each hit is a neighbour's text, [chunk, continuation]
(2m tokens), as RETRO retrieves it. The file is written atomically with a manifest naming the
memory, k and the question count, so a re-run reuses it and a different memory rebuilds it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from burrow.artefacts import atomic_path, files_id, read_manifest, write_manifest
from burrow.errors import BurrowError
from burrow.evaluate.retrieval import memory_fingerprint
from burrow.memory import Memory
from burrow.tasks.catalog import TaskSpec
from burrow.tasks.datasets import data_file, load_qa

log = logging.getLogger(__name__)

SEARCH_BLOCK = 256  # questions per search call


def build_passages(spec: TaskSpec, data_dir: Path, memory: Memory, out_dir: Path, k: int,
                   limit: int | None = None) -> Path:
    """``out_dir/<task>.jsonl``: ``{"question", "passages": [k texts]}`` for the first ``limit`` questions."""
    rows = load_qa(data_file(data_dir, spec.files[0]), aliases=False)
    questions = [r["question"] for r in rows[:limit]]
    info = {"memory": str(memory.dir.resolve()), "memory_tokenizer": memory.tokenizer.fingerprint(), "k": k,
            "questions": len(questions), "source": spec.files[0], "memory_id": memory_fingerprint(memory),
            "source_file": files_id(data_file(data_dir, spec.files[0]))}
    path, kind = out_dir / f"{spec.name}.jsonl", f"{spec.name}.passages"
    try:
        found = read_manifest(out_dir, kind)
    except BurrowError:  # damaged: the passages are retrieved again and the manifest rewritten
        found = None
    if found is not None and path.exists() and {key: found.get(key) for key in info} == info:
        return path
    log.info("%s: retrieving %d passages for each of %d questions", spec.name, k, len(questions))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for a in range(0, len(questions), SEARCH_BLOCK):
            block = questions[a : a + SEARCH_BLOCK]
            res = memory.search(block, k=k)
            for q, ids, texts in zip(block, res.ids, res.texts, strict=True):
                passages = [t.strip() for i, t in zip(ids, texts, strict=True) if i >= 0]
                f.write(json.dumps({"question": q, "passages": passages}, ensure_ascii=False) + "\n")
    write_manifest(out_dir, kind, **info)
    return path
