"""Ray engine vs local engine: key-encoding throughput on the same chunks of WikiText-2, and Ray's overhead.

Builds a memory of the first ``--chunks`` 64-token chunks' worth of WikiText-2 train once (tokenizer,
tokens, chunks), then times the embeddings stage three times on the very same chunks: the local engine
(one process, torch on every core), the Ray engine with ``--workers`` actors (one encoder, one thread
each), and Ray's start-up alone. Also checks that the two engines' keys agree (cosine).

    flock /tmp/burrow-heavy.lock python bench/ray_encode.py [--chunks 8192] [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from burrow.data.shared import WIKITEXT_TRAIN, find_data
from burrow.data.tokenizer import TokenizerConfig
from burrow.memory.build import MemoryConfig, build_memory
from burrow.memory.encode import EncoderConfig, FrozenEncoder
from burrow.memory.keys import key_shard_paths, load_shards
from burrow.memory.ray_engine import RayConfig, build_memory_ray, init_ray


def corpus(out: Path, lines: int) -> Path:
    with gzip.open(find_data() / WIKITEXT_TRAIN, "rt", encoding="utf-8") as f:
        text = [next(f) for _ in range(lines)]
    path = out / "wiki.txt"
    path.write_text("".join(text), encoding="utf-8")
    return path


def embeddings_seconds(timings: list) -> float:
    return next(t.seconds for t in timings if t.name == "embeddings")


def forget_keys(mem: Path) -> None:
    shutil.rmtree(mem / "embeddings", ignore_errors=True)
    for kind in ("embeddings", "index", "memory"):
        (mem / f"{kind}.manifest.json").unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunks", type=int, default=8192, help="about this many 64-token chunks")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ray-encode-"))
    try:
        src = corpus(tmp, lines=args.chunks * 5 // 4)  # WikiText-2 train: ~0.8 chunks per line (many are blank)
        config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=8000), encoder=EncoderConfig(shard_size=1024))
        encoder = FrozenEncoder(config.encoder)
        mem = tmp / "mem"
        _, timings = build_memory([str(src)], mem, config, progress=False, encoder=encoder)
        n = json.loads((mem / "chunks.manifest.json").read_text())["n_chunks"]
        local_s = embeddings_seconds(timings)
        local_keys = load_shards(key_shard_paths(mem))
        forget_keys(mem)
        t0 = time.perf_counter()
        init_ray(RayConfig(workers=args.workers))
        ray_init_s = time.perf_counter() - t0
        _, timings = build_memory_ray([str(src)], mem, config, RayConfig(workers=args.workers), progress=False)
        ray_s = embeddings_seconds(timings)
        ray_keys = load_shards(key_shard_paths(mem))
        cos = (local_keys * ray_keys).sum(1) / np.linalg.norm(local_keys, axis=1) / np.linalg.norm(ray_keys, axis=1)
        # the Ray stage includes starting the actors and loading one encoder in each: time one load here
        t0 = time.perf_counter()
        FrozenEncoder(config.encoder)
        load_s = time.perf_counter() - t0
        res = dict(chunks=n, cores=os.cpu_count(), workers=args.workers, local_s=round(local_s, 1),
                   local_chunks_per_s=round(n / local_s, 1), ray_s=round(ray_s, 1),
                   ray_chunks_per_s=round(n / ray_s, 1), ratio=round(local_s / ray_s, 3),
                   ray_init_s=round(ray_init_s, 1), encoder_load_s=round(load_s, 1),
                   ray_overhead_s=round(ray_s + ray_init_s - local_s, 1), key_cosine_min=float(cos.min()))
        print(json.dumps(res, indent=1))
        if args.json:
            args.json.write_text(json.dumps(res, indent=1) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
