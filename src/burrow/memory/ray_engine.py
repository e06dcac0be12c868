"""The memory built on Ray Data: key shards encoded by an actor pool, neighbours searched by block.

Encoding is ~99% of a build, so that is what runs on the cluster: one Ray Data row per key shard, a
pool of actors that each load the frozen encoder once (bf16 autocast as in the local engine) and write
their shards straight into ``MEMDIR/embeddings`` (atomically; finished shards are skipped, so a killed
build resumes shard by shard). The tokenizer, token store and chunk table are made by the driver, as in
the local engine (they are ~1% of the time); the FAISS index is trained on a sample and filled shard by
shard (memory/index.py), and neighbours are searched block by block over the finished index by another
actor pool, each block written as a part file (resumable) and joined into the same table the local
engine writes. Directory layout, manifests and resume rules are the local engine's (memory/build.py):
the two engines can resume each other's builds.

Every actor reads and writes ``MEMDIR`` itself, so on a multi-node cluster it must be on a shared
filesystem. Ray is an optional extra (``pip install 'burrow[scale]'``).
"""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import atomic_path, read_json
from burrow.errors import BurrowError
from burrow.memory.build import (
    MemoryConfig,
    StageTiming,
    build_memory,
    check_memory_out,
    check_same_inputs,
    compute_neighbours,
)
from burrow.memory.checks import check_inputs
from burrow.memory.encode import EncoderConfig, _shard_ok, encode_shard
from burrow.memory.keys import key_shard_paths
from burrow.memory.memory import Memory

log = logging.getLogger(__name__)

__all__ = ["RayConfig", "build_memory_ray", "neighbours_ray"]

SEARCH_BLOCK = 16_384  # query chunks per neighbour-search task (the resume granularity of neighbours)


@dataclass
class RayConfig:
    """Where the Ray engine runs and how wide."""

    address: str | None = None  # an existing cluster ("HOST:PORT" or "auto"); None starts a local Ray
    workers: int = 2  # encoder actors (and search actors); each holds one encoder
    cpus_per_worker: float = 1.0  # CPUs reserved per actor (its torch threads)
    gpus_per_worker: float = 0.0  # GPUs per actor on a GPU cluster (encoders then run on CUDA)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise BurrowError(f"the Ray engine needs at least one worker, not {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise BurrowError("cpus_per_worker must be > 0 and gpus_per_worker ≥ 0")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BurrowError("the Ray engine needs Ray: pip install 'burrow[scale]' (or ray[data]), "
                          "or build with --engine local") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast (one line) on an address nothing listens at, instead of Ray's minute of retries."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    try:
        if not sep:
            raise ValueError("not HOST:PORT")
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            pass
    except (OSError, ValueError) as e:
        raise BurrowError(f"cannot reach a Ray cluster at {address!r} ({e}); start one with `ray start --head` "
                          "or leave --address out for a local Ray") from None


def init_ray(config: RayConfig) -> Any:
    """Join the cluster at ``config.address`` or start a local Ray sized to ``config.workers``."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if config.address:
        _check_reachable(config.address)
        try:
            ray.init(address=config.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BurrowError(f"cannot join the Ray cluster at {config.address!r}: {str(e).splitlines()[0]}") from None
    else:
        ray.init(num_cpus=max(1, int(config.workers * config.cpus_per_worker)), **kwargs)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # burrow's own bars show the progress
    return ray


class _ShardEncoderActor:
    """One Ray actor: loads the memory's tokenizer, tokens, chunk table and the encoder once; encodes shards."""

    def __init__(self, memdir: str, encoder_config: EncoderConfig):
        from burrow.data.tokenizer import load_tokenizer
        from burrow.data.tokens import TokenStore
        from burrow.memory.chunks import ChunkTable
        from burrow.memory.encode import FrozenEncoder

        self.dir = Path(memdir)
        tok_file = read_json(self.dir / "tokenizer.manifest.json")["file"]
        self.tok = load_tokenizer(str(self.dir / tok_file))
        self.store = TokenStore(self.dir / "tokens")
        self.table = ChunkTable.load(self.dir / "chunks.npz")
        self.encoder = FrozenEncoder(encoder_config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from burrow.memory.chunks import chunk_tokens

        for shard, start, stop in zip(batch["shard"], batch["start"], batch["stop"], strict=True):
            texts = self.tok.decode_batch(chunk_tokens(self.store, self.table, np.arange(start, stop)).tolist())
            keys = encode_shard(self.encoder, texts)  # in the local engine's steps: the same keys to the bit
            with atomic_path(self.dir / "embeddings" / f"shard_{int(shard):05d}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, keys)
        return {"rows": batch["stop"] - batch["start"]}


def ray_shard_encoder(memdir: Path, encoder_config: EncoderConfig, config: RayConfig, dim: int
                      ) -> Callable[[int, Path, Callable[[int], Any]], list[Path]]:
    """A ``ShardEncoder`` for memory/build.py that encodes the missing shards on a Ray actor pool."""

    def encode(n: int, emb_dir: Path, progress: Callable[[int], Any]) -> list[Path]:
        size = encoder_config.shard_size
        todo, paths = [], []
        for s, start in enumerate(range(0, n, size)):
            stop = min(n, start + size)
            path = emb_dir / f"shard_{s:05d}.npy"
            paths.append(path)
            if path.exists() and _shard_ok(path, stop - start, dim):
                progress(stop - start)  # finished before a kill: kept
            else:
                todo.append({"shard": s, "start": start, "stop": stop})
        if todo:
            ray = init_ray(config)
            ds = ray.data.from_items(todo, override_num_blocks=len(todo))
            ds = ds.map_batches(_ShardEncoderActor, fn_constructor_kwargs=dict(memdir=str(memdir),
                                                                               encoder_config=encoder_config),
                                batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(config.workers, len(todo))),
                                num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker or None)
            for row in ds.iter_rows():
                progress(int(row["rows"]))
        return paths

    return encode


def build_memory_ray(inputs: Sequence[str], out: str | Path, config: MemoryConfig | None = None,
                     ray_config: RayConfig | None = None, force: bool = False,
                     progress: bool = True) -> tuple[Memory, list[StageTiming]]:
    """``build_memory`` with the key shards encoded on Ray (same directory, manifests and resume rules)."""
    from burrow.memory.encode import FrozenEncoder

    inputs = check_inputs(inputs)
    check_memory_out(out)
    config = config or MemoryConfig()
    ray_config = ray_config or RayConfig()
    if not force:
        check_same_inputs(inputs, Path(out))  # before Ray starts and the encoder loads
    _ray()  # no Ray: say so before any work is done
    if ray_config.address:
        _check_reachable(ray_config.address)
    encoder = FrozenEncoder(config.encoder)  # the driver's copy: fingerprint, dimension, the Memory it returns
    shard_encoder = ray_shard_encoder(Path(out), config.encoder, ray_config, encoder.dim)
    return build_memory(inputs, out, config, force=force, progress=progress, encoder=encoder,
                        shard_encoder=shard_encoder)


class _SearchActor:
    """One Ray actor: the memory's index (memory-mapped), chunk documents and key shards; searches blocks."""

    def __init__(self, memdir: str, k: int, parts: str):
        from burrow.memory.keys import key_shard_paths

        self.memory = Memory(memdir)
        self.k, self.parts = k, Path(parts)
        shards = key_shard_paths(self.memory.dir) or []
        self.keys = [np.load(p, mmap_mode="r") for p in shards]
        self.bounds = np.cumsum([0] + [len(a) for a in self.keys])

    def _keys(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for s, arr in enumerate(self.keys):
            a, b = max(start, self.bounds[s]), min(stop, self.bounds[s + 1])
            if a < b:
                parts.append(np.asarray(arr[a - self.bounds[s] : b - self.bounds[s]], dtype=np.float32))
        return np.concatenate(parts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for start, stop in zip(batch["start"], batch["stop"], strict=True):
            docs = self.memory.chunks.docs[start:stop]
            d, i = self.memory.search_keys(self._keys(int(start), int(stop)), self.k, exclude_docs=docs)
            with atomic_path(self.parts / f"part_{int(start):012d}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, dists=d, ids=i)
        return {"rows": batch["stop"] - batch["start"]}


def ray_searcher(config: RayConfig) -> Callable[[Memory, int, Path, Callable[[int], Any]],
                                               tuple[np.ndarray, np.ndarray]]:
    """A ``NeighbourSearcher`` for memory/build.py: blocks of the memory's own chunks searched on Ray."""

    def search(memory: Memory, k: int, parts: Path, progress: Callable[[int], Any]) -> tuple[np.ndarray, np.ndarray]:
        n = len(memory.chunks)
        parts.mkdir(parents=True, exist_ok=True)
        blocks = [(a, min(n, a + SEARCH_BLOCK)) for a in range(0, n, SEARCH_BLOCK)]
        todo = []
        for a, b in blocks:
            if (parts / f"part_{a:012d}.npz").exists():
                progress(b - a)  # searched before a kill: kept
            else:
                todo.append({"start": a, "stop": b})
        if todo:
            ray = init_ray(config)
            ds = ray.data.from_items(todo, override_num_blocks=len(todo))
            ds = ds.map_batches(_SearchActor, fn_constructor_kwargs=dict(memdir=str(memory.dir), k=k, parts=str(parts)),
                                batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(config.workers, len(todo))),
                                num_cpus=config.cpus_per_worker)
            for row in ds.iter_rows():
                progress(int(row["rows"]))
        loaded = [np.load(parts / f"part_{a:012d}.npz") for a, _ in blocks]
        dists = np.concatenate([z["dists"] for z in loaded]) if loaded else np.zeros((0, k), np.float32)
        ids = np.concatenate([z["ids"] for z in loaded]) if loaded else np.zeros((0, k), np.int64)
        shutil.rmtree(parts, ignore_errors=True)
        return dists, ids

    return search


def neighbours_ray(memory: Memory, k: int, config: RayConfig | None = None, progress: bool = True,
                   force: bool = False) -> tuple[Path, dict[str, Any]]:
    """``compute_neighbours`` for the memory's own chunks, searched block by block on Ray.

    Needs the key shards (kept by default); without them the search runs in this process.
    """
    config = config or RayConfig()
    if key_shard_paths(memory.dir) is None:
        log.warning("%s kept no key shards; searching neighbours in this process", memory.dir)
    return compute_neighbours(memory, k=k, progress=progress, force=force, searcher=ray_searcher(config))
