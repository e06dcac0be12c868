"""``burrow corpus``: prepare a corpus; ``clean`` applies Gopher's filters, dedup and decontamination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from burrow.cli.options import default_of
from burrow.data.clean import RULES, CleanConfig, apply_overrides, clean_corpus, report_paths
from burrow.data.corpus import CorpusConfig, Document
from burrow.data.quality import Verdict
from burrow.errors import BurrowError

app = typer.Typer(
    help="Prepare corpora: Gopher quality and repetition filters, deduplication, decontamination.",
    no_args_is_help=True,
)


@app.command("clean")
def clean(
    inputs: list[Path] = typer.Argument(..., help="Corpus files or folders (.txt .tokens .jsonl .parquet)."),
    output: Path = typer.Option(..., "--output", "-o", help="Cleaned JSONL (gzipped if it ends in .gz)."),
    against: list[Path] = typer.Option(
        [], "--against", help="Evaluation file or folder to decontaminate against (repeatable)."
    ),
    text_field: str = typer.Option("text", help="JSONL/Parquet field holding the text."),
    txt_split: str = typer.Option("auto", help="Plain-text split: auto, file, blank-line, wikitext, line."),
    against_text_field: str | None = typer.Option(
        None, help="Text field of the --against files (default: --text-field)."
    ),
    shared_ngram: bool = typer.Option(
        False, "--shared-ngram", help="Also drop documents sharing any 13-gram with the evaluation sets."
    ),
    disable: list[str] = typer.Option(
        [], "--disable", help=f"Switch a rule off (repeatable): {', '.join(RULES)}."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a threshold, NAME=VALUE (e.g. min_words=20, threshold=0.9); repeatable."
    ),
    examples: int = typer.Option(default_of(CleanConfig, "examples"),
                                 help="Removed documents shown per rule in the report."),
) -> None:
    """Filter, deduplicate and decontaminate INPUT... into OUT; reports go beside it (.report.md/.json)."""
    from tqdm import tqdm

    # CorpusConfig validates txt_split itself (BurrowError), so the Literal type is checked at run time.
    split: Any = txt_split
    corpus_config = CorpusConfig(text_field=text_field, txt_split=split)
    against_config = CorpusConfig(text_field=against_text_field or text_field, txt_split=split)
    config = apply_overrides(CleanConfig(disabled=tuple(disable), examples=examples), overrides)
    if shared_ngram:
        config = apply_overrides(config, ["shared_ngram=true"])
    if output.exists() and output.is_dir():
        raise BurrowError(f"{output} is a folder; -o takes a file name such as clean.jsonl.gz")
    bar = tqdm(unit=" docs", desc="cleaning", dynamic_ncols=True)
    kept = 0
    nbytes = 0

    def progress(doc: Document, verdict: Verdict | None) -> None:
        nonlocal kept, nbytes
        kept += verdict is None
        nbytes += len(doc.text.encode("utf-8"))  # bytes, as the report counts them
        bar.update(1)
        if bar.n % 200 == 0:
            elapsed = bar.format_dict["elapsed"] or 1e-9
            bar.set_postfix(kept=kept, MBps=f"{nbytes / 1e6 / elapsed:.2f}", refresh=False)

    try:
        report = clean_corpus(
            [str(p) for p in inputs],
            output,
            config,
            corpus_config,
            against=[str(p) for p in against],
            against_config=against_config,
            on_document=progress,
        )
    finally:
        bar.close()
    md_path, _ = report_paths(output)
    typer.echo(
        f"kept {report.documents_kept:,} of {report.documents_in:,} documents "
        f"({report.bytes_kept:,} of {report.bytes_in:,} bytes) -> {output}; report: {md_path}"
    )


def register(root_app: typer.Typer) -> None:
    """Add the ``corpus`` command group to the root ``burrow`` app."""
    root_app.add_typer(app, name="corpus", help="Prepare corpora: clean, deduplicate, decontaminate.")
