"""Benchmark ``burrow corpus clean`` on the shared corpora: documents/s, MB/s, fraction removed per rule.

    .venv/bin/python bench/clean.py [--data /work/shared/data] [--out /tmp/burrow-bench-clean]

Runs WikiText-2 train (decontaminated against WikiText-2 valid + test) and the Wikipedia vital-article
summaries (decontaminated against WikiText-2 test), printing one table per run and the report paths.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from burrow.data.clean import RULES, CleanReport, clean_corpus, report_paths
from burrow.data.corpus import CorpusConfig


def run(name: str, inputs: list[Path], against: list[Path], out: Path, text_field: str) -> CleanReport:
    """Clean one corpus and print its throughput and per-rule removals."""
    config = CorpusConfig(text_field=text_field)
    report = clean_corpus(inputs, out, corpus_config=config, against=against, against_config=CorpusConfig())
    secs = max(report.seconds, 1e-9)
    print(f"\n## {name}: {report.documents_in:,} docs, {report.bytes_in / 1e6:.1f} MB in {secs:.1f} s")
    print(f"{report.documents_in / secs:,.0f} docs/s, {report.bytes_in / 1e6 / secs:.2f} MB/s; "
          f"kept {report.documents_kept / max(report.documents_in, 1):.1%} of docs, "
          f"{report.bytes_kept / max(report.bytes_in, 1):.1%} of bytes")
    print("| rule | docs removed | % docs | % bytes |\n|---|---:|---:|---:|")
    for rule in RULES:
        if rule in report.removed:
            t = report.removed[rule]
            print(f"| {rule} | {t.documents:,} | {t.documents / report.documents_in:.2%} | "
                  f"{t.bytes / report.bytes_in:.2%} |")
    print("report:", report_paths(out)[0])
    return report


def main() -> None:
    """Parse arguments and run both corpora."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/burrow-bench-clean"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    wt = args.data / "wikitext-2"
    evals = [wt / "wiki.valid.tokens.gz", wt / "wiki.test.tokens.gz"]
    out = args.out
    run("WikiText-2 train", [wt / "wiki.train.tokens.gz"], evals, out / "wikitext2-train.jsonl.gz", "text")
    run("Vital-article summaries", [args.data / "wikipedia-vital-summaries" / "summaries_en.jsonl.gz"],
        [wt / "wiki.test.tokens.gz"], args.out / "vital-summaries.jsonl.gz", "extract")


if __name__ == "__main__":
    main()
