"""Corpus readers: files and folders of text, JSONL, Parquet and Hugging Face datasets → Documents.

Every document keeps a stable id and its source (file + line/row, or title). Bad input never stops
a read: binary files, empty documents, undecodable bytes and malformed JSON lines are counted in
:class:`CorpusStats`, and invalid UTF-8 is either repaired (U+FFFD) or the document skipped.
"""

from __future__ import annotations

import gzip
import json
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
            marked: dict[Path, bool] = {}
            out.extend(str(f) for f in files if _kind(f) is not None and not _made_by_burrow(f, p, marked))
        elif p.exists():
            out.append(s)
        else:
            raise BurrowError(f"{s}: no such file or folder")
    if not out:
        raise BurrowError(f"no readable corpus files in {', '.join(map(str, inputs))} (.txt .md .jsonl .parquet)")
    return out


def _made_by_burrow(f: Path, root: Path, marked: dict[Path, bool]) -> bool:
    """Whether ``f``, found in folder ``root``, is burrow's own output rather than corpus: a file of a folder
    holding a stage manifest (a memory or token store built inside the corpus folder: its manifests changed the
    inputs, so every re-run rebuilt it), or the report beside a ``corpus clean`` output (it quotes the documents
    clean removed, decontamination's among them, and was read as a document)."""
    for report in (".report.md", ".report.json"):
        stem = f.name.removesuffix(report)
        if stem != f.name and any((f.parent / f"{stem}{s}{gz}").is_file()
                                  for s in JSONL_SUFFIXES for gz in ("", ".gz")):
            return True
    rel = f.parent.relative_to(root)
    for d in [root / r for r in (rel, *rel.parents)]:  # its folder, up to root
        if d not in marked:
            marked[d] = any(_is_manifest(m) for m in d.glob("*.manifest.json"))
            if marked[d]:
                log.info("%s holds burrow's own artefacts: not read as corpus", d)
        if marked[d]:
            return True
    return False


def _is_manifest(path: Path) -> bool:
    try:
        m = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and "format_version" in m and path.name == f"{m.get('kind')}.manifest.json"


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
