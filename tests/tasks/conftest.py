"""A tiny data folder in the shared/data layout, a tiny memory and tiny baseline / RETRO runs on its tokenizer."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_data(root: Path, docs: dict[str, str]) -> Path:
    """Three rows per task, in each file's real format (SOURCE.md of shared/data)."""
    mc = [{"query": "Question: Where does lava come from?", "choices": ["a volcano", "an owl", "bread", "chess"],
           "gold": 0},
          {"query": "Question: What do owls hunt?", "choices": ["lava", "mice", "kings", "yeast"], "gold": 1},
          {"query": "Question: What is bread baked from?", "choices": ["ash", "feathers", "flour", "pieces"],
           "gold": 2}]
    _jsonl(root / "arc/arc_easy_test.jsonl", mc)
    _jsonl(root / "arc/arc_challenge_test.jsonl", mc)
    _jsonl(root / "piqa/piqa_validation.jsonl", [{**r, "query": r["query"] + "\n", "choices": r["choices"][:2],
                                                   "gold": min(r["gold"], 1)} for r in mc])
    _jsonl(root / "lambada-openai/lambada_openai.jsonl",
           [{"context": "Mount Etna in Sicily erupts often, and its lava flows reach the", "continuation": "villages"},
            {"context": "Bakers knead the dough, let it rise, and bake loaves in hot", "continuation": "ovens"},
            {"context": "Each player moves sixteen pieces, and the goal is to checkmate the opposing",
             "continuation": "king"}])
    _jsonl(root / "winogrande/winogrande_dev.jsonl",
           [{"context_options": ["The owl caught the mouse because the owl",
                                  "The owl caught the mouse because the mouse"],
             "continuation": "was hungry.", "gold": 0}] * 3)
    tqa = [{"question": "Where does lava escape?", "mc1_targets": {"From a volcano.": 1, "From bread.": 0},
            "mc2_targets": {"From a volcano.": 1, "Through the crust.": 1, "From bread.": 0}}] * 3
    (root / "truthfulqa").mkdir(parents=True, exist_ok=True)
    (root / "truthfulqa/mc_task_v0_817.json").write_text(json.dumps(tqa), encoding="utf-8")
    qa = [{"context": "Question: Which volcano erupts often in Sicily?\nAnswer:", "answer": "Mount Etna",
           "aliases": ["Etna"]},
          {"context": "Question: How many pieces does a chess player move?\nAnswer:", "answer": "sixteen",
           "aliases": ["16"]},
          {"context": "Question: What do bakers knead?\nAnswer:", "answer": "dough", "aliases": []}]
    _jsonl(root / "natural-questions-subset/nq_closed_824.jsonl", qa)
    _jsonl(root / "triviaqa-subset/triviaqa_sm_sub_3000.jsonl", qa)
    (root / "wikitext-2").mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "wikitext-2/wiki.test.raw.gz", "wt", encoding="utf-8") as f:
        for name, text in docs.items():
            f.write(f" = {name.title()} = \n {text} \n")
    for split, n in (("dev", 5), ("test", 2)):
        (root / "mmlu" / split).mkdir(parents=True, exist_ok=True)
        from burrow.tasks import MMLU_SUBJECTS

        for subject in MMLU_SUBJECTS:
            with open(root / "mmlu" / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
                for i in range(n):
                    w.writerow([f"Question {i} about {subject}?", "lava", "owls", "bread", "chess", i % 4])
    return root


@pytest.fixture(scope="session")
def task_data(tmp_path_factory: pytest.TempPathFactory, short_docs) -> Path:
    """The tiny data folder."""
    return write_data(tmp_path_factory.mktemp("taskdata"), short_docs)


@pytest.fixture(scope="session")
def task_memory(make_memory):
    """A built memory of four short documents, 8-token chunks, 400-token vocabulary."""
    return make_memory("taskmem")


def _run(root: Path, name: str, retro: bool, memory, seed: int, tokenizer: str | None = None) -> Path:
    """A run directory: ``final/`` + a config.json recording the tokenizer it was trained with."""
    import torch

    from burrow.model import build_model, save_model
    from burrow.presets import get_preset

    extra = dict(cca_layers=(2,), enc_d_model=64, enc_n_heads=2, enc_head_dim=32, zero_init_cca_out=False,
                 retrieved_len=16) if retro else {}
    cfg = get_preset("retro-tiny" if retro else "tiny", vocab_size=memory.tokenizer.vocab_size, chunk_size=8,
                     d_model=64, n_layers=2, n_heads=2, head_dim=32, max_seq_len=128, **extra)
    torch.manual_seed(seed)
    run = root / name
    save_model(build_model(cfg), run / "final")
    (run / "config.json").write_text(json.dumps({"data": {"tokenizer": tokenizer or memory.tokenizer.fingerprint()}}))
    return run


@pytest.fixture(scope="session")
def task_runs(tmp_path_factory: pytest.TempPathFactory, task_memory) -> dict[str, Path]:
    """Untrained tiny runs: ``baseline``, ``retro`` (non-zero CCA: retrieval changes its output), ``stranger``
    (trained, its config says, with another tokenizer)."""
    root = tmp_path_factory.mktemp("taskruns")
    return {"baseline": _run(root, "baseline", False, task_memory, 1),
            "retro": _run(root, "retro", True, task_memory, 0),
            "stranger": _run(root, "stranger", True, task_memory, 2, tokenizer="0123456789abcdef")}
