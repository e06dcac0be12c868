"""What a corpus read yields and counts: :class:`Document`, :class:`CorpusConfig`, :class:`CorpusStats`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from burrow.errors import BurrowError


@dataclass(frozen=True)
class Document:
    """One document of a corpus."""

    id: str  # stable id: "<file name>#<index in file>" or the dataset's own id
    text: str  # the document's text, exactly as scored and tokenized
    source: str  # where it came from: "path:line N", "path:row N" or "hf:name:row N"
    title: str | None = None  # the title where the format has one (JSONL field, WikiText heading)


@dataclass
class CorpusConfig:
    """How to read a corpus."""

    text_field: str = "text"  # JSONL / Parquet / datasets field holding the text; "a,b" tries a then b
    id_field: str = "id"  # column holding a document id, used when present
    title_field: str = "title"  # column holding a title, used when present
    source_field: str = "source"  # column holding an original source (burrow's own JSONL output), kept when present
    txt_split: Literal["auto", "file", "blank-line", "wikitext", "line"] = "auto"
    # how a plain-text file splits into documents: one per file, per blank-line-separated block,
    # per WikiText article (" = Title = " headings), per line; "auto" picks wikitext when the file
    # has WikiText headings, else one document per file.
    invalid_utf8: Literal["replace", "skip"] = "replace"  # repair with U+FFFD, or skip the document
    min_chars: int = 1  # documents with fewer non-space characters are skipped as empty
    hf_split: str = "train"  # split used for Hugging Face datasets

    def __post_init__(self) -> None:
        if self.invalid_utf8 not in ("replace", "skip"):
            raise BurrowError(f"invalid_utf8 must be 'replace' or 'skip', not {self.invalid_utf8!r}")
        if self.txt_split not in ("auto", "file", "blank-line", "wikitext", "line"):
            raise BurrowError(f"unknown txt_split {self.txt_split!r}")


@dataclass
class CorpusStats:
    """Counts of what a read took and what it skipped, by reason."""

    documents: int = 0
    bytes: int = 0
    files: int = 0
    repaired_utf8: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_bytes: int = 0
    truncated: list[str] = field(default_factory=list)  # compressed files that end early (readable lines kept)

    def skip(self, reason: str, nbytes: int = 0) -> None:
        """Count one skipped document (or file) and its bytes."""
        self.skipped[reason] += 1
        self.skipped_bytes += nbytes

    def summary(self) -> str:
        """One line: documents and bytes read and skipped."""
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        repaired = f"; {self.repaired_utf8} repaired invalid UTF-8" if self.repaired_utf8 else ""
        truncated = (f"; {len(self.truncated)} truncated file(s), readable lines kept: {', '.join(self.truncated)}"
                     if self.truncated else "")
        return (
            f"read {self.documents:,} documents ({self.bytes:,} bytes) from {self.files} files; "
            f"skipped {skipped:,} ({self.skipped_bytes:,} bytes): {reasons}{repaired}{truncated}"
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "documents": self.documents,
            "bytes": self.bytes,
            "files": self.files,
            "repaired_utf8": self.repaired_utf8,
            "skipped": dict(self.skipped),
            "skipped_bytes": self.skipped_bytes,
            **({"truncated": list(self.truncated)} if self.truncated else {}),
        }


def no_documents(inputs: Iterable[str | Path], stats: CorpusStats, what: str = "documents") -> BurrowError:
    """The error for inputs that yielded nothing: what was skipped, and what to give instead."""
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(stats.skipped.items())) or "nothing"
    return BurrowError(f"no {what} in {', '.join(map(str, inputs))} ({stats.files} file(s) read; skipped: "
                       f"{reasons}); give text files (.txt .md .jsonl[.gz] .parquet) holding non-empty text "
                       "(JSONL/Parquet: in the --text-field)")
