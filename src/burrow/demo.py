"""The demo: burrow's main job on embedded defaults (memory → models → evaluation as issues land)."""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

from burrow.artefacts import atomic_path
from burrow.data.corpus import CorpusConfig
from burrow.data.shared import VITAL_SUMMARIES, WIKITEXT_TRAIN, find_data
from burrow.data.tokenizer import TokenizerConfig
from burrow.memory.build import MemoryConfig, build_memory

log = logging.getLogger(__name__)

QUERIES = [
    "The European lobster lives in the eastern Atlantic Ocean.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
]


@dataclass
class DemoConfig:
    """What the demo reads and where it writes."""

    out: Path = Path("runs/demo")  # output folder (memory, runs, report)
    data: Path | None = None  # folder laid out like shared/data; None finds it
    quick: bool = False  # a small slice, for `make test`'s end-to-end pass


def _quick_slice(data: Path, out: Path, n_lines: int = 4000) -> list[str]:
    """First lines of each corpus, written once to ``out`` (a stand-in for the full files in --quick)."""
    paths = []
    for rel in (WIKITEXT_TRAIN, VITAL_SUMMARIES):
        dest = out / "quick-data" / Path(rel).name
        if not dest.exists():
            with gzip.open(data / rel, "rt", encoding="utf-8") as f:
                lines = [line for _, line in zip(range(n_lines if "wiki" in rel else n_lines // 4), f, strict=False)]
            with atomic_path(dest) as tmp:
                with gzip.open(tmp, "wt", encoding="utf-8") as g:
                    g.writelines(lines)
        paths.append(str(dest))
    return paths


def run_demo(config: DemoConfig) -> str:
    """Run the demo and return its printed report."""
    data = find_data(config.data, needs=(WIKITEXT_TRAIN, VITAL_SUMMARIES))
    inputs = _quick_slice(data, config.out) if config.quick else [str(data / WIKITEXT_TRAIN),
                                                                  str(data / VITAL_SUMMARIES)]
    mem_config = MemoryConfig(corpus=CorpusConfig(text_field="text,extract"),
                              tokenizer=TokenizerConfig(vocab_size=4096 if config.quick else 8192))
    memory, timings = build_memory(inputs, config.out / "memory", mem_config)
    lines = [f"memory {memory.dir}: {memory.manifest['n_docs']:,} documents, "
             f"{memory.manifest['n_tokens']:,} tokens, {memory.manifest['n_chunks']:,} chunks"]
    for t in timings:
        lines.append(f"  {t.name:<11} {'up to date' if t.skipped else f'{t.seconds:7.1f} s'}")
    res = memory.search(QUERIES, k=2)
    for q, rows in zip(QUERIES, res.to_json(), strict=True):
        lines.append(f"query: {q}")
        for r in rows:
            lines.append(f"  {r['rank']}. d={r['distance']:.3f} {r['source']}: {' '.join(r['chunk'].split())[:120]}")
    return "\n".join(lines)
