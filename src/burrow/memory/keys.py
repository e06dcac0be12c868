"""The memory's stored keys: the frozen encoder's key shards (``MEMDIR/embeddings``), read back by chunk id.

Shape legend: c chunks asked for, e key width.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import read_json
from burrow.errors import BurrowError


def key_shard_paths(memory_dir: Path) -> list[Path] | None:
    """The key shards of a memory in chunk order, or None when they were not kept (or are incomplete)."""
    manifest = memory_dir / "embeddings.manifest.json"
    if not manifest.exists() or not (memory_dir / "embeddings").exists():
        return None
    shards = [memory_dir / "embeddings" / p for p in read_json(manifest)["shards"]]
    return shards if all(p.exists() for p in shards) else None


def stored_keys(memory_dir: Path, index: Any, chunk_ids: np.ndarray) -> np.ndarray:
    """(c, e) stored keys of memory chunks ``chunk_ids`` (sorted), read shard by shard.

    Falls back to reconstructing them from a flat index when the shards were not kept.
    """
    shards = key_shard_paths(memory_dir)
    if shards is not None:
        return _keys_from_shards(shards, chunk_ids)
    try:
        return np.stack([index.reconstruct(int(i)) for i in chunk_ids]).astype(np.float32)
    except RuntimeError:
        raise BurrowError(f"{memory_dir} kept no key shards and its index cannot return keys; rebuild the "
                          "memory with keep_embeddings to run the memory-size sweep") from None


def _keys_from_shards(shards: list[Path], chunk_ids: np.ndarray) -> np.ndarray:
    parts, start = [], 0
    for path in shards:
        arr = np.load(path, mmap_mode="r")  # (shard rows, e)
        sel = chunk_ids[(chunk_ids >= start) & (chunk_ids < start + len(arr))] - start
        parts.append(np.asarray(arr[sel], dtype=np.float32))
        start += len(arr)
    return np.concatenate(parts)


def shard_problem(directory: Path, manifest: dict[str, Any]) -> str | None:
    """What is wrong with the key shards an embeddings manifest lists (a missing file, a size or a row count
    other than recorded), or None when they are all there. Reads only file sizes and .npy headers."""
    names, sizes = manifest.get("shards", []), manifest.get("shard_bytes")
    rows = 0
    for i, name in enumerate(names):
        path = directory / name
        if not path.is_file():
            return f"key shard {path} is missing"
        if sizes is not None and path.stat().st_size != sizes[i]:
            return f"key shard {path} has {path.stat().st_size:,} bytes, not the {sizes[i]:,} written"
        try:
            shape = np.load(path, mmap_mode="r").shape
        except (ValueError, OSError):
            return f"key shard {path} is damaged"
        if len(shape) != 2 or shape[1] != manifest.get("dim", shape[1]):
            return f"key shard {path} has shape {shape}, not (rows, {manifest.get('dim')})"
        rows += shape[0]
    if rows != manifest.get("n", rows):
        return f"the key shards in {directory} hold {rows:,} keys, not the {manifest.get('n'):,} written"
    return None


def load_shards(paths: Sequence[Path]) -> np.ndarray:
    """All shards as one (n, dim) float32 array."""
    if not paths:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([np.load(p) for p in paths]).astype(np.float32, copy=False)
