"""What a built memory makes for other corpora and for training: neighbour tables (k neighbours for every
chunk of the memory's own token store, or of another store) and token stores of other corpora in the
memory's tokenizer. Each table is written atomically, then its manifest, which records the memory and store
it was made from; a re-run with the same inputs reuses it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from burrow.artefacts import (
    atomic_path,
    config_hash,
    file_as_recorded,
    manifest_path,
    read_manifest,
    removing_new_folders,
    write_manifest,
)
from burrow.data.corpus import CorpusConfig, CorpusStats, given_inputs, name_inputs, no_documents, read_corpus
from burrow.data.tokens import KIND as TOKENS_KIND
from burrow.data.tokens import NoDocuments, TokenStore, write_token_store
from burrow.defaults import DEFAULT_K
from burrow.errors import BurrowError
from burrow.memory.checks import check_directory, check_inputs, check_k
from burrow.memory.chunks import ChunkTable, chunk_table, chunk_tokens
from burrow.memory.encode import encode_sharded
from burrow.memory.keys import key_shard_paths, load_shards
from burrow.memory.memory import Memory
from burrow.memory.neighbours import neighbour_table_paths, store_table_name

log = logging.getLogger(__name__)

__all__ = ["NeighbourSearcher", "compute_neighbours", "tokenize_store"]

#: Another engine's neighbour search over the memory's own kept keys: ``(memory, k, work dir, progress) ->
#: (dists, ids)``, same-document neighbours excluded.
NeighbourSearcher = Callable[[Memory, int, Path, Callable[[int], Any]], tuple[np.ndarray, np.ndarray]]


def compute_neighbours(memory: Memory | str | Path, k: int = DEFAULT_K, target: str | Path | None = None,
                       name: str | None = None, progress: bool = True, force: bool = False,
                       searcher: NeighbourSearcher | None = None) -> tuple[Path, dict[str, Any]]:
    """Precompute ``k`` neighbours for every chunk of ``target`` (default: the memory's own token store).

    The memory's own chunks exclude neighbours from their own document; another store's do not
    (its documents are not in the memory). Returns the ids table path and its manifest. ``searcher``
    searches the memory's own kept keys elsewhere (the Ray engine); other targets are searched here.
    ``memory`` is a :class:`Memory` or its directory; ``k`` must be >= 1.
    """
    k = check_k(k)
    memory = memory if isinstance(memory, Memory) else Memory(memory)
    own = target is None or Path(target).resolve() == (memory.dir / "tokens").resolve()
    store = memory.store if own else TokenStore(target)  # type: ignore[arg-type]
    if not own:
        store.check_tokenizer(memory.tokenizer)
    name = name or ("self" if own else store_table_name(str(target)))
    ids_p, dist_p, kind = neighbour_table_paths(memory.dir, name, k)
    inputs = config_hash({"memory": memory.manifest, "store": store.manifest.get("inputs", store.manifest),
                          "k": k, "m": memory.chunk_size})
    m = read_manifest(ids_p.parent, kind)
    files = (m or {}).get("files", {})
    if m is not None and m.get("inputs") == inputs and not force and file_as_recorded(ids_p, files.get("ids", {})) \
            and file_as_recorded(dist_p, files.get("distances", {})):
        return ids_p, m
    manifest_path(ids_p.parent, kind).unlink(missing_ok=True)
    table = memory.chunks if own else chunk_table(store, memory.chunk_size)
    if own and searcher is not None and key_shard_paths(memory.dir) is not None:
        with tqdm(total=len(table), unit="chunk", desc=f"neighbours k={k}", disable=not progress,
                  unit_scale=True) as bar:
            parts = ids_p.parent / f".{kind}.{inputs}.parts"  # finished blocks of this very search (resume)
            if force:
                shutil.rmtree(parts, ignore_errors=True)
            dists, ids = searcher(memory, k, parts, bar.update)
    else:
        # the query keys' shards of this very search (a killed one resumes); a folder of other inputs (another
        # token store, memory or encoder behind the same table name) is never read: its shards would pass
        # as this search's, being of the right shape
        key_dir = ids_p.parent / f".{kind}.{inputs}.keys"
        for old in [ids_p.parent / f"{kind}.keys", *ids_p.parent.glob(f".{kind}.*.keys")]:
            if old != key_dir or force:
                shutil.rmtree(old, ignore_errors=True)
        keys = _query_keys(memory, store, table, own, key_dir, progress)
        with tqdm(total=len(table), unit="chunk", desc=f"neighbours k={k}", disable=not progress,
                  unit_scale=True) as bar:  # (closed on failure too, so an error starts on its own line)
            dists, ids = memory.search_keys(keys, k, exclude_docs=table.docs if own else None, progress=bar.update)
    for path, arr in ((ids_p, ids), (dist_p, dists)):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
    if not own:  # before the manifest: a table marked complete has its chunks file
        table.save(ids_p.parent / f"{name}.chunks.npz")
    m = write_manifest(ids_p.parent, kind, inputs=inputs, name=name, k=k, n_chunks=len(table),
                       target=str(store.dir), exclude_same_document=own, chunk_size=memory.chunk_size,
                       missing=int((ids < 0).sum()),
                       files={"ids": {"bytes": ids_p.stat().st_size}, "distances": {"bytes": dist_p.stat().st_size}})
    return ids_p, m


def _query_keys(memory: Memory, store: TokenStore, table: ChunkTable, own: bool, key_dir: Path,
                progress: bool) -> np.ndarray:
    shards = key_shard_paths(memory.dir) if own else None
    if shards is not None:
        return load_shards(shards)
    tok = memory.tokenizer
    with tqdm(total=len(table), unit="chunk", desc="encode queries", disable=not progress, unit_scale=True) as bar:
        paths = encode_sharded(memory.encoder, lambda a, b: tok.decode_batch(
            chunk_tokens(store, table, np.arange(a, b)).tolist()), len(table), key_dir, progress=bar.update)
    keys = load_shards(paths)
    shutil.rmtree(key_dir, ignore_errors=True)
    return keys


def tokenize_store(memory: Memory, inputs: Sequence[str], out: str | Path,
                   corpus: CorpusConfig | None = None, progress: bool = True, force: bool = False) -> TokenStore:
    """Tokenize another corpus (e.g. a validation set: a list of files or folders) with the memory's tokenizer
    into a token store. A store at ``out`` made from other inputs or with another tokenizer is replaced only
    with ``force``; from the same inputs it is made again (their contents may have changed)."""
    inputs = check_inputs(inputs)
    check_directory(out, "the output folder")
    if Path(out).resolve() in (memory.dir.resolve(), (memory.dir / "tokens").resolve()):
        raise BurrowError(f"{out} is the memory's own folder or token store; give another -o")
    tok = memory.tokenizer
    if not force:
        _check_same_store(Path(out), given_inputs(inputs), tok.fingerprint())
    stats = CorpusStats()
    with removing_new_folders(out), tqdm(unit="doc", desc="tokenize", disable=not progress) as bar:
        try:  # (the bar closes first, so an error starts on its own line)
            store = write_token_store(out, read_corpus(inputs, corpus or CorpusConfig(), stats), tok,
                                      progress=lambda d, t: bar.update(d),
                                      extra=lambda: {"given": given_inputs(inputs)})
        except NoDocuments:  # say what was skipped and why, as `memory build` does
            raise no_documents(inputs, stats) from None
        except BaseException:  # a reader's error (a JSONL without the text field), Ctrl-C: an unfinished store's
            if not manifest_path(out, TOKENS_KIND).exists():  # start goes, so a folder made for it is removed
                (Path(out) / "tokens.bin").unlink(missing_ok=True)
            raise
    log.info(stats.summary())
    return store


def _check_same_store(out: Path, given: list[str], tokenizer: str) -> None:
    """Refuse to replace a finished token store of other inputs or of another tokenizer (a mistyped -o would
    lose it, and the neighbour tables and evaluations made from it)."""
    try:
        old = read_manifest(out, TOKENS_KIND) if out.is_dir() else None
    except BurrowError:
        return  # a damaged record: nothing finished to keep
    if old is None:
        return
    if old.get("tokenizer") != tokenizer:
        why = "tokens of another tokenizer"
    elif old.get("given", given) != given:
        why = f"tokens of {name_inputs(old['given'])}"
    else:
        return
    raise BurrowError(f"{out} holds {why}; give another -o, or --force to replace it")
