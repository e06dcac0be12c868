"""Reading one corpus file (or Hugging Face dataset) into Documents: bytes, gzip, decoding, the formats.

Bad input never stops a read: binary files, empty documents, undecodable bytes and malformed JSON lines
are counted in :class:`~burrow.data.documents.CorpusStats`; invalid UTF-8 is repaired (U+FFFD) or the
document skipped, as :class:`~burrow.data.documents.CorpusConfig` says.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from burrow.data.documents import CorpusConfig, CorpusStats, Document
from burrow.data.tokenizer import valid_text
from burrow.errors import BurrowError

log = logging.getLogger(__name__)

# A top-level WikiText heading: " = Title = " (sub-headings are " = = Sub = = ").
_WIKITEXT_TITLE = re.compile(r"^ = ([^=].*?) = $")


def read_bytes(path: Path, stats: CorpusStats) -> bytes | None:
    """The file's bytes (gunzipped; a truncated .gz gives its readable part), or None when unreadable."""
    try:
        raw = _read_gzip(path, stats) if path.suffix.lower() == ".gz" else path.read_bytes()
        # a UTF-8 byte-order mark is no text: in a JSONL file it made the first record malformed (skipped)
        return raw.removeprefix(b"\xef\xbb\xbf") if raw is not None else None
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


def looks_binary(raw: bytes) -> bool:
    """Whether ``raw`` is not text (NUL bytes or mostly control bytes in its first 8 KiB)."""
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
    """Split a text file into (first line number, text, title) blocks. Lines end at "\n" only, a "\r" before it
    belonging to the line's end (CRLF files); ``str.splitlines`` also broke lines at U+2028, form feeds and
    other characters inside a line, and a CRLF file's title lines never matched."""
    parts = text.split("\n")
    lines = [ln + "\n" for ln in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    if mode == "auto":
        mode = "wikitext" if any(_WIKITEXT_TITLE.match(ln.rstrip("\r\n")) for ln in lines[:200]) else "file"
    if mode == "file":
        yield 1, text, None
        return
    if mode == "line":
        for i, ln in enumerate(lines):
            yield i + 1, ln.rstrip("\r\n"), None
        return
    start, title = 1, None
    block: list[str] = []
    for i, ln in enumerate(lines):
        if mode == "wikitext":
            m = _WIKITEXT_TITLE.match(ln.rstrip("\r\n"))
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


def read_text(path: Path, raw: bytes, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    """The documents of a text file, split as ``config.txt_split`` says."""
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


def read_jsonl(path: Path, raw: bytes, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    """One document per JSON line (its ``config.text_field``); malformed lines are counted and skipped. A file
    none of whose records has the field is refused, as a Parquet file without the column is (its records were
    skipped one by one, and the build went on without the file)."""
    records = found = 0
    fields: list[str] = []
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
        if isinstance(record, dict):
            records += 1
            fields = fields or [k for k, v in record.items() if isinstance(v, str)]
        if text is None:
            stats.skip(f"no_{config.text_field}_field", len(line))
            continue
        found += 1
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
    if records and not found:
        raise BurrowError(f"{path}: none of its {records:,} records has a {config.text_field!r} field (its text "
                          f"fields: {', '.join(fields) or 'none'}); name the one holding the text with --text-field "
                          "('a,b' tries a, then b), or leave the file out")


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


def read_parquet(path: Path, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    """One document per Parquet row (its ``config.text_field``)."""
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


def read_hf(name: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    """One document per row of a Hugging Face dataset (a hub name or a folder saved with save_to_disk)."""
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
