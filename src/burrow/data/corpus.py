"""Corpus readers: files and folders of text, JSONL, Parquet and Hugging Face datasets → Documents.

Every document keeps a stable id and its source (file + line/row, or title). Bad input never stops
a read: binary files, empty documents, undecodable bytes and malformed JSON lines are counted in
:class:`CorpusStats`, and invalid UTF-8 is either repaired (U+FFFD) or the document skipped.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from burrow.data.documents import CorpusConfig, CorpusStats, Document, no_documents
from burrow.data.readers import looks_binary, read_bytes, read_hf, read_jsonl, read_parquet, read_text
from burrow.errors import BurrowError

__all__ = ["CorpusConfig", "CorpusStats", "Document", "expand_inputs", "no_documents", "open_text", "read_corpus"]

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".tokens", ".raw", ".text"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}


def given_inputs(inputs: Iterable[str]) -> list[str]:
    """The inputs as named: a hub dataset's name, a file's or folder's own name. Not the whole path, so a
    moved project (or demo folder) or a re-pointed link still refreshes what was made from them; a mistyped
    path does not."""
    return sorted(i if i.startswith("hf:") else (Path(i).name or i) for i in inputs)


def name_inputs(names: Sequence[str]) -> str:
    """Recorded :func:`given_inputs` for a message: the first three, then how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Expand folders into their readable files (sorted, recursive); keep ``hf:`` names as they are."""
    if isinstance(inputs, str | Path):  # a bare string would be read one character at a time
        raise BurrowError(f"give a list of corpus files or folders, not one string ({str(inputs)!r})")
    out: list[str] = []
    for item in inputs:
        s = str(item)
        if not s.strip():  # Path("") is the working folder: `-d ''` read everything in it
            raise BurrowError("an input path is empty; give a file or folder")
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
            yield from read_hf(item[3:], config, stats)
            continue
        path = Path(item)
        stats.files += 1
        kind = _kind(path) or "text"
        if kind == "parquet":
            yield from read_parquet(path, config, stats)
            continue
        raw = read_bytes(path, stats)
        if raw is None:
            stats.skip("unreadable")
            continue
        if looks_binary(raw):
            stats.skip("binary", len(raw))
            log.debug("skipping binary file %s", path)
            continue
        if kind == "jsonl":
            yield from read_jsonl(path, raw, config, stats)
        else:
            yield from read_text(path, raw, config, stats)


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently gunzipping ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")
