"""Build a memory directory stage by stage: tokenizer → tokens → chunks → keys → index (neighbour tables and
other token stores: memory/tables.py, re-exported here).

Each stage writes its outputs atomically and then its manifest, which records a hash of what it was
built from. A re-run skips every stage whose manifest matches, resumes the key encoding from its
completed shards, and redoes the rest; ``force`` redoes everything.

A stage whose inputs changed (a hash chains the hashes of the stages before it) removes its own manifest
and every later one before it starts, so a rebuild that stops partway never leaves a memory that opens
with parts of two builds. A stage redone with the same inputs (its file damaged, its manifest lost) writes
the same content again, so the later stages built from it stay valid and are not redone.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from burrow.artefacts import (
    check_out_dir,
    check_out_not,
    config_hash,
    damaged,
    file_as_recorded,
    files_id,
    manifest_path,
    read_json,
    read_manifest,
    removing_new_folders,
    write_json,
    write_manifest,
)
from burrow.data.corpus import (
    CorpusConfig,
    CorpusStats,
    expand_inputs,
    given_inputs,
    name_inputs,
    no_documents,
    read_corpus,
)
from burrow.data.tokenizer import (
    Tokenizer,
    load_tokenizer,
    source_fingerprint,
    tokenizer_manifest,
    train_tokenizer,
)
from burrow.data.tokens import TokenStore, write_token_store
from burrow.errors import BurrowError
from burrow.memory.checks import check_directory, check_inputs
from burrow.memory.chunks import ChunkTable, chunk_table, chunk_tokens
from burrow.memory.config import MemoryConfig
from burrow.memory.encode import FrozenEncoder, encode_sharded
from burrow.memory.index import build_index, save_index
from burrow.memory.keys import shard_problem
from burrow.memory.memory import Memory
from burrow.memory.neighbours import neighbour_table_paths
from burrow.memory.sources import corpus_roots
from burrow.memory.tables import NeighbourSearcher, compute_neighbours, tokenize_store

log = logging.getLogger(__name__)

__all__ = ["MemoryConfig", "NeighbourSearcher", "StageTiming", "build_memory", "check_same_inputs",
           "compute_neighbours", "neighbour_table_paths", "tokenize_store"]

STAGES = ("tokenizer", "chunks", "embeddings", "index", "memory")

#: Another engine's key encoder: ``(n chunks, embeddings dir, progress) -> shard paths`` in chunk order, each
#: shard written atomically as ``shard_NNNNN.npy`` of ``shard_size`` rows (memory/ray_engine.py).
ShardEncoder = Callable[[int, Path, Callable[[int], Any]], list[Path]]


@dataclass
class StageTiming:
    """What one stage did and how long it took."""

    name: str
    seconds: float
    items: int
    unit: str
    skipped: bool = False

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.items / self.seconds if self.seconds > 0 else float("inf")


def _inputs_fingerprints(inputs: Sequence[str], corpus: CorpusConfig) -> tuple[str, str]:
    """The corpus key from each file's size and mtime in nanoseconds, and the one earlier burrows made from
    whole-second mtimes (a file rewritten within the second, same size, kept that key)."""
    files, whole = [], []
    for item in expand_inputs(inputs):
        p = Path(item)
        st = p.stat() if p.exists() else None
        if st is not None:
            files.append([item, st.st_size, st.st_mtime_ns])
            whole.append([item, st.st_size, int(st.st_mtime)])
        elif item.startswith("hf:") and Path(item[3:]).is_dir():  # a save_to_disk folder: what is in it
            files.append([item, files_id(item[3:])])
            whole.append([item])  # earlier burrows keyed it by its name alone
        else:  # a hub dataset: its name
            files.append([item])
            whole.append([item])
    return (config_hash({"files": files, "corpus": asdict(corpus)}),
            config_hash({"files": whole, "corpus": asdict(corpus)}))


def check_same_inputs(inputs: Sequence[str], out: Path) -> None:
    """A folder holding a memory (or a build's finished stages) made from other inputs than ``inputs`` is
    refused without --force: going on would replace it, and a mistyped path would cost its encoding.
    The same inputs with changed contents refresh it, as designed."""
    try:
        m = read_manifest(out, "tokenizer") if out.is_dir() else None
    except BurrowError:
        return  # a damaged record: the stages redo what they must
    before, given = (m or {}).get("given"), given_inputs(inputs)
    if before is not None and before != given:
        raise BurrowError(f"{out} holds a memory built from {name_inputs(before)}; this build reads "
                          f"{name_inputs(given)}. "
                          "Give another -o, or --force to rebuild it from these inputs (runs trained on it will "
                          "no longer match it)")


class _Builder:
    """One build: holds paths, config and timings; each stage is one method."""

    def __init__(self, inputs: Sequence[str], out: Path, config: MemoryConfig, force: bool, progress: bool):
        self.inputs, self.out, self.config, self.progress = list(inputs), out, config, progress
        self.force = force  # start again: finished stages and key shards are not reused
        self.timings: list[StageTiming] = []
        self.shard_encoder: ShardEncoder | None = None  # None: encode in this process
        self.corpus_stats = CorpusStats()
        self.encoder_id = ""  # the encoder's fingerprint as the embeddings stage records it
        self.given = given_inputs(self.inputs)
        if not force:
            check_same_inputs(self.inputs, self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if force:
            for kind in (*STAGES, "tokens"):
                manifest_path(self.out / ("tokens" if kind == "tokens" else ""), kind).unlink(missing_ok=True)
        self.corpus_fp, whole_seconds = _inputs_fingerprints(self.inputs, config.corpus)
        if not force and self._fresh("tokenizer", self._tokenizer_inputs(whole_seconds)) is not None:
            self.corpus_fp = whole_seconds  # built by an earlier burrow from these files: kept, not rebuilt

    def _fresh(self, kind: str, inputs: str, directory: Path | None = None) -> dict[str, Any] | None:
        m = read_manifest(directory or self.out, kind)
        return m if m is not None and m.get("inputs") == inputs else None

    def _stage(self, kind: str, inputs: str, directory: Path | None = None) -> dict[str, Any] | None:
        """Stage ``kind``'s manifest when it was built from ``inputs``, else None; when it was built from
        other inputs, its manifest and every later stage's are removed now (see the module docstring)."""
        m = read_manifest(directory or self.out, kind)
        if m is not None and m.get("inputs") != inputs:
            self._drop_from(kind)
            return None
        return m

    def _drop_from(self, kind: str) -> None:
        """Remove the manifests of stage ``kind`` and every later one."""
        order = ("tokenizer", "tokens", "chunks", "embeddings", "index", "memory")
        for later in order[order.index(kind):]:
            manifest_path(self.out / "tokens" if later == "tokens" else self.out, later).unlink(missing_ok=True)

    def _bar(self, total: int | None, unit: str, desc: str) -> tqdm:
        return tqdm(total=total, unit=unit, desc=desc, disable=not self.progress, unit_scale=True,
                    dynamic_ncols=True, leave=True)

    def _tokenizer_inputs(self, corpus_fp: str) -> str:
        return config_hash({"corpus": corpus_fp, "tok": asdict(self.config.tokenizer)})

    def tokenizer(self) -> Tokenizer:
        cfg = self.config.tokenizer
        inputs = self._tokenizer_inputs(self.corpus_fp)
        m = self._stage("tokenizer", inputs)
        if m is not None and cfg.source is not None and source_fingerprint(cfg.source, cfg.gguf_file) not in (
                None, m.get("fingerprint")):  # the key holds the path: the file there was replaced since
            log.info("%s changed since this memory was built; reading it again", cfg.source)
            self._drop_from("tokenizer")
            m = None
        if m is not None:
            try:
                tok = load_tokenizer(str(self.out / m["file"]))
            except BurrowError as e:  # deleted or damaged after its manifest was written: make it again
                log.warning("%s; making the tokenizer again", e)
            else:
                self.timings.append(StageTiming("tokenizer", 0.0, 0, "docs", skipped=True))
                return tok
        t0 = time.perf_counter()
        stats = CorpusStats()
        if cfg.source is None:
            log.info("training a %d-piece SentencePiece BPE tokenizer on a corpus sample", cfg.vocab_size)
            try:
                tok = train_tokenizer((d.text for d in read_corpus(self.inputs, self.config.corpus, stats)),
                                      self.out, cfg)
            except BurrowError:
                if stats.documents == 0:  # the whole corpus was read and nothing in it is text
                    raise no_documents(self.inputs, stats) from None
                raise
        else:
            first = next(iter(read_corpus(self.inputs, self.config.corpus, stats)), None)
            if first is None:
                raise no_documents(self.inputs, stats)
            tok = load_tokenizer(cfg.source, cfg.gguf_file)
        tok.path = tok.save(self.out)
        sample = next(iter(read_corpus(self.inputs, self.config.corpus)), None)
        fields = tokenizer_manifest(tok, cfg, sample.text if sample is not None else None)
        fields["file"] = tok.path.name
        write_manifest(self.out, "tokenizer", inputs=inputs, given=self.given, **fields)
        self.timings.append(StageTiming("tokenizer", time.perf_counter() - t0, 1, "tokenizer"))
        return tok

    def tokens(self, tok: Tokenizer) -> TokenStore:
        inputs = config_hash({"corpus": self.corpus_fp, "tok": tok.fingerprint()})
        m = self._stage("tokens", inputs, self.out / "tokens")
        if m is not None:
            try:
                kept = TokenStore(self.out / "tokens")
            except BurrowError as e:  # a file cut short after its manifest was written: redo, not fail
                log.warning("%s; tokenizing again", e)
            else:
                self.timings.append(StageTiming("tokens", 0.0, int(m["n_tokens"]), "tokens", skipped=True))
                return kept
        t0 = time.perf_counter()
        bar = self._bar(None, "doc", "tokenize")
        stats = CorpusStats()
        docs = read_corpus(self.inputs, self.config.corpus, stats)
        with bar:  # closed on failure too, so an error starts on its own line
            store = write_token_store(self.out / "tokens", docs, tok, progress=lambda d, t: bar.update(d),
                                      extra=lambda: {"inputs": inputs, "corpus": stats.to_dict()})
        self.corpus_stats = stats
        log.info(stats.summary())
        self.timings.append(StageTiming("tokens", time.perf_counter() - t0, store.n_tokens, "tokens"))
        return store  # write_token_store opened it after its manifest was written

    def chunks(self, store: TokenStore) -> tuple[str, ChunkTable]:
        inputs = config_hash({"tokens": store.manifest["inputs"], "m": self.config.chunk_size})
        if self._stage("chunks", inputs) is not None:
            try:
                with damaged(self.out / "chunks.npz"):
                    return inputs, ChunkTable.load(self.out / "chunks.npz")
            except BurrowError as e:  # cut short after its manifest was written: cut again (below)
                log.warning("%s; cutting the chunks again", e)
        t0 = time.perf_counter()
        table = chunk_table(store, self.config.chunk_size)
        table.save(self.out / "chunks.npz")
        write_manifest(self.out, "chunks", inputs=inputs, n_chunks=len(table), chunk_size=table.chunk_size,
                       short_chunks=int((table.lengths < table.chunk_size).sum()),
                       padding="short chunks and continuations past a document's end are right-padded "
                               "with the tokenizer's pad id")
        self.timings.append(StageTiming("chunks", time.perf_counter() - t0, len(table), "chunks"))
        return inputs, table

    def embeddings(self, store: TokenStore, tok: Tokenizer, chunks_fp: str, table: ChunkTable,
                   encoder: FrozenEncoder) -> tuple[list[Path], str]:
        inputs, self.encoder_id = self._embeddings_inputs(chunks_fp, encoder)
        emb_dir = self.out / "embeddings"
        m = self._stage("embeddings", inputs)
        n = len(table)
        needed = self._keys_needed(inputs)
        if m is not None and needed:
            problem = shard_problem(emb_dir, m)
            if problem is not None:  # a deleted or damaged shard: re-encode what is missing, keep the rest
                log.warning("%s; re-encoding the missing keys", problem)
                m = None
        if m is not None or not needed:  # (not needed: keys not kept and the index built from them is complete)
            self.timings.append(StageTiming("embeddings", 0.0, n, "chunks", skipped=True))
            return [emb_dir / p for p in (m or {}).get("shards", [])], inputs
        progress_file = emb_dir / "progress.json"
        if emb_dir.exists() and (self.force or not progress_file.exists()
                                 or read_json(progress_file).get("inputs") != inputs):
            shutil.rmtree(emb_dir)  # shards of other chunks or another encoder (or --force): never reused
        emb_dir.mkdir(parents=True, exist_ok=True)
        write_json(progress_file, {"inputs": inputs})
        t0 = time.perf_counter()
        bar = self._bar(n, "chunk", "encode")

        def texts_of(a: int, b: int) -> list[str]:
            return tok.decode_batch(chunk_tokens(store, table, np.arange(a, b)).tolist())

        with bar:  # closed on failure too, so an error starts on its own line
            if self.shard_encoder is not None:
                paths = self.shard_encoder(n, emb_dir, bar.update)
            else:
                paths = encode_sharded(encoder, texts_of, n, emb_dir, progress=bar.update)
        write_manifest(self.out, "embeddings", inputs=inputs, n=n, dim=encoder.dim, dtype="float32",
                       shards=[p.name for p in paths], shard_bytes=[p.stat().st_size for p in paths],
                       encoder=self.encoder_id, precision=str(encoder.dtype))
        self.timings.append(StageTiming("embeddings", time.perf_counter() - t0, n, "chunks"))
        return paths, inputs

    def _embeddings_inputs(self, chunks_fp: str, encoder: FrozenEncoder) -> tuple[str, str]:
        """(the embeddings stage's key, the encoder fingerprint recorded): keys of other weights, or made at
        another ``precision`` than the config's (fp32 / bf16; ``auto`` keeps the keys any device made), are never
        reused. Keys an earlier burrow made, keyed on the first 4 MiB of the weights and without the precision,
        are kept when the precision it recorded is this encoder's."""
        shard = encoder.config.shard_size
        try:
            m = None if self.force else read_manifest(self.out, "embeddings")
        except BurrowError:
            m = None  # a damaged record: the stage redoes what it must
        if m is not None and m.get("precision") == str(encoder.dtype) and m.get("encoder") == \
                encoder.earlier_fingerprint() and m.get("inputs") == config_hash(
                    {"chunks": chunks_fp, "encoder": m["encoder"], "shard": shard}):
            return m["inputs"], m["encoder"]
        fp = encoder.fingerprint()
        return config_hash({"chunks": chunks_fp, "encoder": fp, "shard": shard,
                            "precision": encoder.config.precision}), fp

    def _keys_needed(self, emb_fp: str) -> bool:
        """Whether the key shards must be on disk: kept by config, or the index must be (re)built from them."""
        index_inputs = config_hash({"emb": emb_fp, "index": asdict(self.config.index)})
        return self.config.keep_embeddings or not file_as_recorded(self.out / "index.faiss",
                                                            self._fresh("index", index_inputs))

    def index(self, shards: list[Path], emb_fp: str, dim: int, n: int) -> dict[str, Any]:
        inputs = config_hash({"emb": emb_fp, "index": asdict(self.config.index)})
        m = self._stage("index", inputs)
        if m is not None and file_as_recorded(self.out / "index.faiss", m):
            self.timings.append(StageTiming("index", 0.0, n, "chunks", skipped=True))
            return m
        t0 = time.perf_counter()
        index, factory, params = build_index(shards, dim, n, self.config.index)
        save_index(index, self.out / "index.faiss")
        m = write_manifest(self.out, "index", inputs=inputs, factory=factory, search_params=params,
                           ntotal=int(index.ntotal), metric="squared_l2",
                           bytes=(self.out / "index.faiss").stat().st_size)
        if not self.config.keep_embeddings:
            shutil.rmtree(self.out / "embeddings", ignore_errors=True)
        self.timings.append(StageTiming("index", time.perf_counter() - t0, n, "chunks"))
        return m


def encoder_on(config: MemoryConfig, device: str) -> FrozenEncoder | None:
    """The memory's encoder on ``device`` for this build (None: ``auto``, built by the build itself). The device
    is where this process encodes, not what the memory is: its manifest keeps the config's own (``auto``), so
    another device neither changes the memory (its runs would refuse it) nor ties its queries to that device."""
    if device == "auto":
        return None
    return FrozenEncoder(replace(config.encoder, device=device))


#: What ``-o`` must not be: a build into a run replaced its footprint.json and mixed a memory into its files.
NOT_A_MEMORY = (("a run or model", ("model.manifest.json", "model.safetensors", "train.manifest.json", "final",
                                    "checkpoints")),
                ("an evaluation report", ("eval.json",)))


def check_memory_out(out: str | Path) -> None:
    """``out`` as a memory's folder: refused (before any work) where it is a run, a model or an eval report."""
    check_out_dir(out)
    check_out_not(out, NOT_A_MEMORY, "the memory's footprint.json, tokens/ and index")


def build_memory(inputs: Sequence[str], out: str | Path, config: MemoryConfig | None = None,
                 force: bool = False, progress: bool = True,
                 encoder: FrozenEncoder | None = None,
                 shard_encoder: ShardEncoder | None = None) -> tuple[Memory, list[StageTiming]]:
    """Build (or resume, or refresh) the memory at ``out`` from corpus ``inputs``: a list of files, folders or
    ``hf:NAME`` (a bare string is refused, not read as one input per character).

    ``shard_encoder`` encodes the key shards elsewhere (the Ray engine); every other stage, the layout and
    the manifests are the same either way.
    """
    inputs = check_inputs(inputs)
    check_directory(out, "the output folder")
    check_memory_out(out)
    config = config or MemoryConfig()
    with removing_new_folders(out):
        return _build(inputs, Path(out), config, force, progress, encoder, shard_encoder)


def _build(inputs: Sequence[str], out: Path, config: MemoryConfig, force: bool, progress: bool,
           encoder: FrozenEncoder | None, shard_encoder: ShardEncoder | None) -> tuple[Memory, list[StageTiming]]:
    b = _Builder(inputs, out, config, force, progress)
    b.shard_encoder = shard_encoder
    tok = b.tokenizer()
    store = b.tokens(tok)
    chunks_fp, table = b.chunks(store)
    encoder = encoder or FrozenEncoder(config.encoder)
    shards, emb_fp = b.embeddings(store, tok, chunks_fp, table, encoder)
    index_m = b.index(shards, emb_fp, encoder.dim, len(table))
    fields = dict(
        tokenizer=tok.fingerprint(), tokenizer_file=tok.path.name,
        encoder=b.encoder_id, encoder_config=asdict(config.encoder), chunk_size=config.chunk_size,
        dim=encoder.dim, n_docs=store.n_docs, n_tokens=store.n_tokens, n_chunks=int(index_m["ntotal"]),
        index=index_m["factory"], config=asdict(config), corpus=store.manifest.get("corpus", {}),
        corpus_roots=corpus_roots(inputs),  # sources are shown relative to these (memory/sources.py)
        # what it holds (tokens -> chunks -> keys -> index): an edit that keeps every count changes the memory
        # too (its datastores and neighbour tables, keyed on this manifest, were reused stale)
        contents=index_m["inputs"],
    )
    old = read_manifest(b.out, "memory")
    # Rewrite only on change: runs and caches fingerprint this manifest, a no-op re-run must keep it. A memory
    # built before 'contents' was recorded is compared without it: adding it alone would change the memory
    # its runs were trained with (they would refuse it) and drop its neighbour tables.
    compared = {k: v for k, v in fields.items() if k != "contents" or old is None or "contents" in old}
    if old is None or {k: old.get(k) for k in compared} != json.loads(json.dumps(compared, default=str)):
        for stale in (b.out / "neighbours").glob("*.manifest.json"):  # tables of the memory this one replaces
            stale.unlink()
        write_manifest(b.out, "memory", **fields)
    return Memory(b.out, encoder=encoder), b.timings
