"""Argument checks of the memory API (:class:`~burrow.memory.Memory`, ``build_memory``,
``compute_neighbours``): a wrong argument is one clear :class:`BurrowError`, never a raw Python error
or a silently wrong answer (a bare string iterated as one item per character)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from burrow.errors import BurrowError


def check_k(k: Any, what: str = "k") -> int:
    """``k`` (neighbours) as an int >= 1; anything else is an error."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise BurrowError(f"{what} must be a whole number >= 1, not {k!r}")
    return int(k)


def _items(value: Any, what: str) -> list[Any]:
    """``value`` as a list; a bare str/bytes (one item, not a list of them) or a non-iterable is an error."""
    if isinstance(value, (str, bytes, os.PathLike)):
        raise BurrowError(f"{what} must be a list, not a single {type(value).__name__} "
                          f"(give [{value!r}] for one)")
    if not isinstance(value, Iterable):
        raise BurrowError(f"{what} must be a list, not {type(value).__name__}")
    return list(value)


def check_queries(queries: Any) -> list[str] | np.ndarray:
    """Search queries: a list of texts, or token chunks (q, ≤m) as a 2-D integer array.

    A blank text is allowed (in-context retrieval may build one from a window of spaces) and finds no
    neighbours; the CLI and the server refuse one typed by a user.
    """
    if isinstance(queries, np.ndarray) and queries.dtype.kind in "iu":
        if queries.ndim != 2:
            raise BurrowError(f"token-chunk queries must be a 2-D array (queries, tokens), not {queries.ndim}-D")
        return queries
    texts = _items(queries.tolist() if isinstance(queries, np.ndarray) else queries, "queries")
    for q in texts:
        if not isinstance(q, str):
            raise BurrowError(f"each query must be a text (str), not {type(q).__name__}: {q!r}"[:200])
    return texts


def check_inputs(inputs: Any) -> list[str]:
    """Corpus inputs: a non-empty list of paths (str or path-like) or ``hf:NAME``s."""
    items = _items(inputs, "inputs (corpus files or folders)")
    if not items:
        raise BurrowError("no input files given")
    for i in items:
        if not isinstance(i, (str, os.PathLike)) or not str(i):
            raise BurrowError(f"each input must be a path or hf:NAME, not {i!r}"[:200])
    return [os.fspath(i) for i in items]


def check_directory(directory: Any, what: str = "memory directory") -> None:
    """``directory`` must be a path (str or path-like)."""
    if not isinstance(directory, (str, os.PathLike)) or not str(directory):
        raise BurrowError(f"{what} must be a path, not {directory!r}"[:200])


def check_ids(ids: Any, what: str, count: int | None, low: int, high: int) -> np.ndarray:
    """A 1-D integer array (``count`` long when given) of values in [low, high): ``exclude_docs`` (-1 or a
    memory document per query) and ``within`` (memory chunk ids). NumPy would read -2 as the last chunk and
    a short array as an IndexError deep in the search: both are one clear error here."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise BurrowError(f"{what} must be a 1-D array of whole numbers, not {arr.dtype} of shape {arr.shape}")
    if count is not None and len(arr) != count:
        raise BurrowError(f"{what} holds {len(arr)} values for {count} queries; give one per query")
    if arr.size and (arr.min() < low or arr.max() >= high):
        raise BurrowError(f"{what} must hold values in [{low}, {high - 1}]; it holds {arr.min()} … {arr.max()}")
    return arr.astype(np.int64, copy=False)
