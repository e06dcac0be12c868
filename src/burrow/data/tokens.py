"""The token store: every document's tokens in one flat memmap, plus document offsets and sources.

Layout of a token-store directory::

    tokens.bin            flat uint16 (vocab ≤ 65,536) or uint32 token ids
    offsets.npy           int64 (documents + 1,): document d is tokens[offsets[d]:offsets[d+1]]
    documents.jsonl       one line per document: id, source, title, bytes (UTF-8 bytes of its text)
    tokens.manifest.json  format, dtype, counts, tokenizer fingerprint, content hash — written last

The manifest's counts are the truth: bytes past ``n_tokens`` in ``tokens.bin`` (left by a killed
append) are ignored and overwritten by the next append.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import atomic_path, damaged, manifest_path, read_manifest, require_manifest, write_manifest
from burrow.data.corpus import Document
from burrow.data.tokenizer import Tokenizer
from burrow.errors import BurrowError

log = logging.getLogger(__name__)

KIND = "tokens"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


@dataclass(frozen=True)
class DocInfo:
    """Where one document came from."""

    id: str
    source: str
    title: str | None
    bytes: int  # UTF-8 bytes of the document's text (the bits-per-byte denominator)


class NoDocuments(BurrowError):
    """Nothing to write: every input document was empty or skipped (callers say which and why)."""


class TokenStore:
    """Read side of a token store (memory-mapped); create or extend with :func:`write_token_store`."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.manifest = require_manifest(self.dir, KIND)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.n_tokens = int(self.manifest["n_tokens"])
        self.n_docs = int(self.manifest["n_docs"])
        docs_bytes = self.manifest.get("documents_bytes")  # absent in stores written before it was recorded
        size = _size(self.dir / "documents.jsonl")
        if docs_bytes is not None and size != docs_bytes:
            what = "is missing" if size is None else f"is damaged ({size} bytes, not {docs_bytes})"
            raise BurrowError(f"{self.dir / 'documents.jsonl'} {what}; rebuild it (re-run the command that made it)")
        with damaged(self.dir / "offsets.npy"):
            self.offsets = np.load(self.dir / "offsets.npy")[: self.n_docs + 1]
        if len(self.offsets) != self.n_docs + 1 or int(self.offsets[-1]) != self.n_tokens:
            raise BurrowError(f"{self.dir}: offsets do not match the manifest; rebuild with --force")
        with damaged(self.dir / "tokens.bin"):
            self.tokens = (
                np.memmap(self.dir / "tokens.bin", dtype=self.dtype, mode="r", shape=(self.n_tokens,))
                if self.n_tokens else np.zeros(0, dtype=self.dtype)
            )
        self._docs: list[DocInfo] | None = None

    @property
    def tokenizer_fingerprint(self) -> str:
        """Fingerprint of the tokenizer these tokens were made with."""
        return str(self.manifest["tokenizer"])

    @property
    def pad_id(self) -> int:
        """Pad id of that tokenizer."""
        return int(self.manifest["pad_id"])

    @property
    def docs(self) -> list[DocInfo]:
        """Document provenance, loaded on first use."""
        if self._docs is None:
            with damaged(self.dir / "documents.jsonl"), open(self.dir / "documents.jsonl", encoding="utf-8") as f:
                rows = [json.loads(line) for _, line in zip(range(self.n_docs), f, strict=False)]
                docs = [DocInfo(r["id"], r["source"], r.get("title"), int(r["bytes"])) for r in rows]
                if len(docs) != self.n_docs:
                    raise ValueError(f"{len(docs)} documents, not {self.n_docs}")
            self._docs = docs
        return self._docs

    def document(self, d: int) -> np.ndarray:
        """Tokens of document ``d``."""
        return np.asarray(self.tokens[self.offsets[d] : self.offsets[d + 1]])

    def doc_of(self, positions: np.ndarray) -> np.ndarray:
        """Document index of each flat token position."""
        return np.searchsorted(self.offsets, positions, side="right") - 1

    def check_tokenizer(self, tok: Tokenizer) -> None:
        """Raise a clear error if ``tok`` is not the tokenizer these tokens were made with."""
        if tok.fingerprint() != self.tokenizer_fingerprint:
            raise BurrowError(
                f"{self.dir} was tokenized with tokenizer {self.tokenizer_fingerprint}, not "
                f"{tok.fingerprint()}; re-tokenize it with the memory's tokenizer"
            )


def write_token_store(
    directory: str | Path, docs: Iterable[Document], tok: Tokenizer, append: bool = False,
    batch_docs: int = 256, progress: Any = None, extra: Callable[[], dict[str, Any]] | None = None,
) -> TokenStore:
    """Tokenize ``docs`` into a token store at ``directory`` (appending to an existing one if asked).

    ``progress`` is an optional callable ``(docs, tokens)`` called after each batch; ``extra`` returns
    fields added to the manifest once every document is read (e.g. corpus statistics).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    old = read_manifest(directory, KIND) if append else None
    if not append:  # a rewrite must never look complete until it is
        manifest_path(directory, KIND).unlink(missing_ok=True)
    dtype = token_dtype(tok.vocab_size)
    if old is not None:
        if old["tokenizer"] != tok.fingerprint():
            raise BurrowError(f"{directory} holds tokens of another tokenizer; cannot append")
        offsets = list(np.load(directory / "offsets.npy")[: old["n_docs"] + 1])
        with open(directory / "documents.jsonl", encoding="utf-8") as f:
            doc_lines = [line for _, line in zip(range(old["n_docs"]), f, strict=False)]
        n_tokens, total_bytes = int(old["n_tokens"]), int(old.get("bytes", 0))
    else:
        offsets, doc_lines, n_tokens, total_bytes = [0], [], 0, 0
    # what the tokens and documents are: the counts alone match an edit that keeps them (a corrected year), and
    # what is keyed on this store (its neighbour tables, a run's data fingerprint) was then reused
    content = hashlib.blake2b(str((old or {}).get("content", "")).encode(), digest_size=16)
    with open(directory / "tokens.bin", "r+b" if old is not None else "wb") as out:
        out.truncate(n_tokens * dtype.itemsize)
        out.seek(n_tokens * dtype.itemsize)
        for batch in _batches(docs, batch_docs):
            ids = tok.encode_batch([d.text for d in batch])
            for d, seq in zip(batch, ids, strict=True):
                arr = np.asarray(seq, dtype=dtype)
                out.write(arr.tobytes())
                content.update(arr.tobytes())
                n_tokens += len(arr)
                offsets.append(n_tokens)
                nbytes = len(d.text.encode("utf-8"))
                total_bytes += nbytes
                doc_lines.append(json.dumps({"id": d.id, "source": d.source, "title": d.title,
                                             "bytes": nbytes}, ensure_ascii=False) + "\n")
                content.update(doc_lines[-1].encode("utf-8"))
            if progress is not None:
                progress(len(batch), sum(len(s) for s in ids))
    if len(offsets) == 1:
        if old is None:
            (directory / "tokens.bin").unlink()  # nothing was written: no empty file left looking like a start
        raise NoDocuments("no documents to tokenize: every input was empty or skipped")
    _finish(directory, np.asarray(offsets, dtype=np.int64), doc_lines, n_tokens, total_bytes, tok, dtype,
            {"content": content.hexdigest(), **(extra() if extra is not None else {})})
    return TokenStore(directory)


def _batches(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for d in docs:
        batch.append(d)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _finish(directory: Path, offsets: np.ndarray, doc_lines: list[str], n_tokens: int, total_bytes: int,
            tok: Tokenizer, dtype: np.dtype, extra: dict[str, Any]) -> None:
    with atomic_path(directory / "offsets.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, offsets)
    with atomic_path(directory / "documents.jsonl") as tmp:
        tmp.write_text("".join(doc_lines), encoding="utf-8")
    write_manifest(directory, KIND, dtype=dtype.name, n_tokens=n_tokens, n_docs=len(offsets) - 1,
                   bytes=total_bytes, documents_bytes=_size(directory / "documents.jsonl"),
                   tokenizer=tok.fingerprint(), pad_id=tok.pad_id,
                   vocab_size=tok.vocab_size, **extra)


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def memory_documents(doc_ids: Sequence[str], doc_bytes: Sequence[int] | np.ndarray, memory_docs: Sequence[Any]
                     ) -> np.ndarray:
    """(D,) per document, the memory document that is the same one (-1 where none): the same id
    and the same UTF-8 length. An id is a file's base name and the document's index in it, which unrelated
    files share (``train/x.txt`` and ``valid/x.txt`` are both ``x.txt#0``): the id alone excluded unrelated
    memory documents from the document's search."""
    index: dict[tuple[str, int], int] = {}
    for i, doc in enumerate(memory_docs):
        index.setdefault((doc.id, int(doc.bytes)), i)
    return np.array([index.get((d, int(b)), -1) for d, b in zip(doc_ids, doc_bytes, strict=True)], dtype=np.int64)
