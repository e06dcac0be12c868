"""Corpus readers: files and folders of text, JSONL, Parquet and Hugging Face datasets → Documents.

Every document keeps a stable id and its source (file + line/row, or title). Bad input never stops
a read: binary files, empty documents, undecodable bytes and malformed JSON lines are counted in
:class:`CorpusStats`, and invalid UTF-8 is either repaired (U+FFFD) or the document skipped.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Literal

from burrow.data.tokenizer import valid_text
from burrow.errors import BurrowError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".tokens", ".raw", ".text"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
# A top-level WikiText heading: " = Title = " (sub-headings are " = = Sub = = ").
_WIKITEXT_TITLE = re.compile(r"^ = ([^=].*?) = $")


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


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Expand folders into their readable files (sorted, recursive); keep ``hf:`` names as they are."""
    out: list[str] = []
    for item in inputs:
        s = str(item)
        if s.startswith("hf:"):
            out.append(s)
            continue
        p = Path(s)
        if p.is_dir():
            if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists():
                out.append(f"hf:{p}")
                continue
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            out.extend(str(f) for f in files if _kind(f) is not None)
        elif p.exists():
            out.append(s)
        else:
            raise BurrowError(f"{s}: no such file or folder")
    if not out:
        raise BurrowError(f"no readable corpus files in {', '.join(map(str, inputs))} (.txt .md .jsonl .parquet)")
    return out


def _kind(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last in PARQUET_SUFFIXES:
        return "parquet"
    if last in TEXT_SUFFIXES:
        return "text"
    return None


def read_corpus(
    inputs: Iterable[str | Path], config: CorpusConfig | None = None, stats: CorpusStats | None = None
) -> Iterator[Document]:
    """Yield the documents of every input (files, folders, ``hf:`` dataset names), counting into ``stats``."""
    config = config or CorpusConfig()
    stats = stats if stats is not None else CorpusStats()
    for item in expand_inputs(inputs):
        if item.startswith("hf:"):
            yield from _read_hf(item[3:], config, stats)
            continue
        path = Path(item)
        stats.files += 1
        kind = _kind(path) or "text"
        if kind == "parquet":
            yield from _read_parquet(path, config, stats)
            continue
        raw = _read_bytes(path, stats)
        if raw is None:
            stats.skip("unreadable")
            continue
        if _looks_binary(raw):
            stats.skip("binary", len(raw))
            log.debug("skipping binary file %s", path)
            continue
        if kind == "jsonl":
            yield from _read_jsonl(path, raw, config, stats)
        else:
            yield from _read_text(path, raw, config, stats)


def _read_bytes(path: Path, stats: CorpusStats) -> bytes | None:
    try:
        if path.suffix.lower() == ".gz":
            return _read_gzip(path, stats)
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


def _read_gzip(path: Path, stats: CorpusStats) -> bytes | None:
    """A gzip file's bytes; one that ends early keeps its complete lines (counted in ``stats.truncated``)."""
    parts: list[bytes] = []
    with gzip.open(path, "rb") as f:
        while True:
            try:
                block = f.read1(1 << 16)  # read1: what was decompressed before a failure is kept
            except (OSError, EOFError, zlib.error) as e:
                if isinstance(e, gzip.BadGzipFile) and not parts:
                    raise  # not gzip at all
                error = e
                break
            if not block:
                return b"".join(parts)
            parts.append(block)
    raw = b"".join(parts)
    cut = raw.rfind(b"\n") + 1  # drop the incomplete last line
    if cut == 0:
        log.warning("cannot read %s: %s (no complete line before the damage)", path, error)
        return None
    lost = len(raw) - cut
    stats.truncated.append(str(path))
    stats.skip("truncated_tail", lost)
    log.warning("%s is truncated (%s): kept its first %d lines (%d bytes); the rest is lost, so re-download or "
                "re-compress it for the whole file", path, error, raw.count(b"\n", 0, cut), cut)
    return raw[:cut]


def _looks_binary(raw: bytes) -> bool:
    head = raw[:8192]
    if b"\x00" in head:
        return True
    if not head:
        return False
    control = sum(1 for b in head if b < 9 or 13 < b < 32)
    return control / len(head) > 0.1


def _decode(raw: bytes, config: CorpusConfig, stats: CorpusStats) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if config.invalid_utf8 == "skip":
            stats.skip("invalid_utf8", len(raw))
            return None
        stats.repaired_utf8 += 1
        return raw.decode("utf-8", errors="replace")


def _emit(doc: Document, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    if doc.title is not None and not doc.title.isascii():
        doc = replace(doc, title=valid_text(doc.title))
    try:
        nbytes = len(doc.text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: a JSON "\ud800" escape, or a record of a dataset
        fixed = valid_text(doc.text)
        if config.invalid_utf8 == "skip":
            stats.skip("invalid_utf8", len(fixed.encode("utf-8")))
            return
        stats.repaired_utf8 += 1
        doc = replace(doc, text=fixed)
        nbytes = len(fixed.encode("utf-8"))
    if sum(1 for c in doc.text if not c.isspace()) < config.min_chars:
        stats.skip("empty", nbytes)
        return
    stats.documents += 1
    stats.bytes += nbytes
    yield doc


def _text_blocks(text: str, mode: str) -> Iterator[tuple[int, str, str | None]]:
    """Split a text file into (first line number, text, title) blocks."""
    lines = text.splitlines(keepends=True)
    if mode == "auto":
        mode = "wikitext" if any(_WIKITEXT_TITLE.match(ln.rstrip("\n")) for ln in lines[:200]) else "file"
    if mode == "file":
        yield 1, text, None
        return
    if mode == "line":
        for i, ln in enumerate(lines):
            yield i + 1, ln.rstrip("\n"), None
        return
    start, title = 1, None
    block: list[str] = []
    for i, ln in enumerate(lines):
        if mode == "wikitext":
            m = _WIKITEXT_TITLE.match(ln.rstrip("\n"))
            if m and block:
                yield start, "".join(block), title
                start, block = i + 1, []
            if m:
                title = m.group(1).strip()
            block.append(ln)
        else:  # blank-line
            if ln.strip():
                if not block:
                    start = i + 1
                block.append(ln)
            elif block:
                yield start, "".join(block), None
                block = []
    if block:
        yield start, "".join(block), title if mode == "wikitext" else None


def _read_text(path: Path, raw: bytes, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    if config.txt_split == "file":
        text = _decode(raw, config, stats)
        if text is not None:
            yield from _emit(Document(f"{path.name}#0", text, f"{path}:line 1"), config, stats)
        return
    # Decode line by line so one bad line costs one document, not the file.
    text = raw.decode("utf-8", errors="surrogateescape")
    for idx, (line_no, block, title) in enumerate(_text_blocks(text, config.txt_split)):
        fixed = _decode(block.encode("utf-8", errors="surrogateescape"), config, stats)
        if fixed is None:
            continue
        doc = Document(f"{path.name}#{idx}", fixed, f"{path}:line {line_no}", title)
        yield from _emit(doc, config, stats)


def _read_jsonl(path: Path, raw: bytes, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    for i, line in enumerate(io.BytesIO(raw)):
        if not line.strip():
            continue
        text_line = _decode(line, config, stats)
        if text_line is None:
            continue
        try:
            record = json.loads(text_line)
        except json.JSONDecodeError:
            stats.skip("bad_json", len(line))
            continue
        text = _text_of(record, config) if isinstance(record, dict) else None
        if text is None:
            stats.skip(f"no_{config.text_field}_field", len(line))
            continue
        doc_id = record.get(config.id_field)
        title = record.get(config.title_field)
        source = record.get(config.source_field)
        doc = Document(
            str(doc_id) if doc_id is not None else f"{path.name}#{i}",
            text,
            str(source) if isinstance(source, str) else f"{path}:line {i + 1}",
            str(title) if title is not None else None,
        )
        yield from _emit(doc, config, stats)


def _read_records(
    rows: Iterable[dict[str, object]], name: str, config: CorpusConfig, stats: CorpusStats
) -> Iterator[Document]:
    for i, record in enumerate(rows):
        text = _text_of(record, config)
        if text is None:
            stats.skip(f"no_{config.text_field}_field")
            continue
        doc_id = record.get(config.id_field)
        title = record.get(config.title_field)
        doc = Document(
            str(doc_id) if doc_id is not None else f"{Path(name).name}#{i}",
            text,
            f"{name}:row {i}",
            str(title) if title is not None else None,
        )
        yield from _emit(doc, config, stats)


def _text_of(record: dict[str, object], config: CorpusConfig) -> str | None:
    for name in config.text_field.split(","):
        value = record.get(name.strip())
        if isinstance(value, str):
            return value
    return None


def _read_parquet(path: Path, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for non-parquet bytes
        stats.skip("bad_parquet")
        log.warning("cannot read %s as Parquet: %s", path, e)
        return
    if not any(f.strip() in pf.schema_arrow.names for f in config.text_field.split(",")):
        raise BurrowError(f"{path} has no column {config.text_field!r}; columns: {pf.schema_arrow.names}")

    def rows() -> Iterator[dict[str, object]]:
        for batch in pf.iter_batches(batch_size=1024):
            yield from batch.to_pylist()

    yield from _read_records(rows(), str(path), config, stats)


def _read_hf(name: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise BurrowError(f"reading hf:{name} needs the `datasets` package: pip install datasets") from None
    stats.files += 1
    try:
        if Path(name).exists():
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[config.hf_split]
        else:
            ds = datasets.load_dataset(name, split=config.hf_split, streaming=True)
    except Exception as e:
        raise BurrowError(f"cannot load Hugging Face dataset {name!r}: {e}") from None
    yield from _read_records(ds, f"hf:{name}", config, stats)


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently gunzipping ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")
