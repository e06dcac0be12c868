"""Agreement of burrow's Gopher quality + repetition filters with datatrove's, document by document.

    .venv/bin/python bench/clean_agreement.py --datatrove-python /tmp/dt-venv/bin/python

Exports the shared corpora (WikiText-2 train, vital-article summaries) to a temporary JSONL, runs
datatrove's GopherQualityFilter and GopherRepetitionFilter on it in their own virtual environment
(a subprocess: datatrove is not a burrow dependency), runs burrow's filters here, and prints the
agreement rate and the disagreements grouped by (burrow rule, datatrove rule). Dedup is not compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from burrow.data.corpus import CorpusConfig, read_corpus
from burrow.data.quality import QualityConfig, quality_verdict
from burrow.data.repetition import RepetitionConfig, repetition_verdict

# Runs inside the datatrove venv: reads JSONL (id, text), writes {id: rule or null}.
DATATROVE_SCRIPT = """
import json, sys
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
quality, repetition = GopherQualityFilter(), GopherRepetitionFilter()
out = {}
for line in open(sys.argv[1], encoding="utf-8"):
    rec = json.loads(line)
    doc = Document(text=rec["text"], id=rec["id"])
    rule = None
    for f in (quality, repetition):
        res = f.filter(doc)
        if res is not True and not (isinstance(res, tuple) and res[0]):
            rule = res[1] if isinstance(res, tuple) else type(f).__name__
            break
    out[rec["id"]] = rule
json.dump(out, open(sys.argv[2], "w"))
"""


def corpora(data: Path) -> list[tuple[str, list[Path], CorpusConfig]]:
    """The shared corpora compared: name, inputs, reader config."""
    return [
        ("wikitext2-train", [data / "wikitext-2" / "wiki.train.tokens.gz"], CorpusConfig()),
        ("vital-summaries", [data / "wikipedia-vital-summaries" / "summaries_en.jsonl.gz"],
         CorpusConfig(text_field="extract")),
    ]


def burrow_decisions(path: Path) -> dict[str, str | None]:
    """burrow's first failing quality/repetition rule per document id (None = kept)."""
    q, r = QualityConfig(), RepetitionConfig()
    out: dict[str, str | None] = {}
    for line in path.open(encoding="utf-8"):
        rec = json.loads(line)
        verdict = quality_verdict(rec["text"], q) or repetition_verdict(rec["text"], r)
        out[rec["id"]] = verdict.rule if verdict else None
    return out


def compare(name: str, ours: dict[str, str | None], theirs: dict[str, str | None]) -> None:
    """Print agreement on keep/drop and the disagreement classes."""
    agree = sum((ours[k] is None) == (theirs[k] is None) for k in ours)
    print(f"\n## {name}: {len(ours):,} documents; keep/drop agreement {agree / len(ours):.2%}")
    print(f"burrow drops {sum(v is not None for v in ours.values()):,}, "
          f"datatrove drops {sum(v is not None for v in theirs.values()):,}")
    differ = [k for k in ours if (ours[k] is None) != (theirs[k] is None)]
    classes = Counter((ours[k] or "keep", theirs[k] or "keep") for k in differ)
    print("| burrow | datatrove | documents |\n|---|---|---:|")
    for (b, d), n in classes.most_common():
        print(f"| {b} | {d} | {n} |")


def main() -> None:
    """Export, run both implementations, compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--datatrove-python", default="/tmp/dt-venv/bin/python")
    parser.add_argument("--decisions", type=Path, default=None, help="write per-doc decisions (JSON)")
    args = parser.parse_args()
    all_decisions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, inputs, config in corpora(args.data):
            docs = Path(tmp) / f"{name}.jsonl"
            with docs.open("w", encoding="utf-8") as f:
                for i, doc in enumerate(read_corpus(inputs, config)):
                    f.write(json.dumps({"id": f"{i}:{doc.id}", "text": doc.text}) + "\n")
            script = Path(tmp) / "dt.py"
            script.write_text(DATATROVE_SCRIPT, encoding="utf-8")
            theirs_path = Path(tmp) / f"{name}.datatrove.json"
            subprocess.run([args.datatrove_python, str(script), str(docs), str(theirs_path)], check=True)
            theirs = json.loads(theirs_path.read_text())
            ours = burrow_decisions(docs)
            compare(name, ours, theirs)
            all_decisions[name] = {k: {"burrow": ours[k], "datatrove": theirs[k]} for k in ours}
    if args.decisions:
        args.decisions.write_text(json.dumps(all_decisions, indent=1))


if __name__ == "__main__":
    main()
