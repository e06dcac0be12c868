"""Benchmark the memory build on WikiText-2 train + the Wikipedia lead sections.

Prints documents, tokens, chunks, seconds and chunks/s per stage; the frozen encoder's raw
throughput measured in the same run on the same chunk texts; the pipeline's throughput as a ratio
of it, whole build and encode stage (target ≥ 0.9: the encoder is the cost; the raw rate is the best of 3
passes after the build); bf16-vs-fp32 key cosine on a sample, both precisions asked for explicitly (target ≥ 0.99);
and recall@2 of approximate indexes against exact search on a sample of real keys.

    .venv/bin/python bench/memory_build.py [--data DIR] [--out DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from burrow.data.corpus import CorpusConfig
from burrow.data.shared import VITAL_SUMMARIES, WIKITEXT_TRAIN, find_data
from burrow.memory.build import MemoryConfig, build_memory
from burrow.memory.encode import EncoderConfig, FrozenEncoder
from burrow.memory.index import IndexConfig, build_index, search
from burrow.memory.keys import load_shards


def raw_encoder_rate(encoder: FrozenEncoder, texts: list[str], repeats: int = 3) -> float:
    """Chunks/s of the bare encoder on pre-decoded texts (the ceiling for the pipeline), best of ``repeats``
    (on a shared host noise only ever adds time)."""
    encoder.encode(texts[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoder.encode(texts)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def bf16_cosine(texts: list[str]) -> tuple[float, float]:
    """(mean, min) cosine between keys of the same texts encoded in bf16 and in fp32 (both asked for
    explicitly: the build's own precision is fp32 on a CPU without bf16 units)."""
    bf16 = FrozenEncoder(EncoderConfig(precision="bf16"))
    fp32 = FrozenEncoder(EncoderConfig(precision="fp32"))
    a, b = bf16.encode(texts), fp32.encode(texts)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


def recall_at_2(shards: list[Path], n_queries: int = 1000) -> dict[str, float]:
    """recall@2 of HNSW and IVF-PQ against exact search, queries = a sample of the memory's own keys."""
    keys = load_shards(shards)
    rng = np.random.default_rng(0)
    q = keys[rng.choice(len(keys), n_queries, replace=False)]
    _, exact = search(build_index(shards, keys.shape[1], len(keys), IndexConfig(factory="Flat"))[0], q, 2)
    out = {}
    nlist = 1 << int(np.log2(4 * np.sqrt(len(keys))))
    for factory, params in (("HNSW32", "efSearch=128"), (f"OPQ48,IVF{nlist},PQ48", "nprobe=64")):
        t0 = time.perf_counter()
        index, _, _ = build_index(shards, keys.shape[1], len(keys),
                                  IndexConfig(factory=factory, search_params=params, train_sample=50_000))
        build_s = time.perf_counter() - t0
        _, got = search(index, q, 2)
        hits = sum(len(set(g) & set(e)) for g, e in zip(got.tolist(), exact.tolist(), strict=True))
        out[f"{factory} {params}"] = hits / exact.size
        print(f"  recall@2 {factory:<22} {params:<13} {hits / exact.size:.3f}  (built in {build_s:.1f} s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="/tmp/burrow-bench-memory")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    data = find_data(args.data, needs=(WIKITEXT_TRAIN, VITAL_SUMMARIES))
    shutil.rmtree(args.out, ignore_errors=True)
    config = MemoryConfig(corpus=CorpusConfig(text_field="text,extract"))
    encoder = FrozenEncoder(config.encoder)
    print(f"encoder {config.encoder.model} precision {encoder.dtype} batch {config.encoder.batch_size}")
    t0 = time.perf_counter()
    memory, timings = build_memory([str(data / WIKITEXT_TRAIN), str(data / VITAL_SUMMARIES)], args.out, config,
                                   encoder=encoder, progress=False)
    total = time.perf_counter() - t0
    m = memory.manifest
    print(f"documents {m['n_docs']:,}  tokens {m['n_tokens']:,}  chunks {m['n_chunks']:,}")
    for t in timings:
        print(f"  {t.name:<11} {t.items:>11,} {t.unit:<7} {t.seconds:8.1f} s  {t.rate:>12,.0f} {t.unit}/s  "
              f"({m['n_chunks'] / max(t.seconds, 1e-9):,.0f} chunks/s)")
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(memory), 2048, replace=False))
    texts = memory.tokenizer.decode_batch(memory.chunk_tokens(sample).tolist())
    raw = raw_encoder_rate(encoder, texts)
    pipeline = m["n_chunks"] / total
    encode_s = sum(t.seconds for t in timings if t.name == "embeddings")
    encode_stage = m["n_chunks"] / encode_s if encode_s else float("nan")
    print(f"pipeline {pipeline:,.0f} chunks/s over {total:.1f} s; its encode stage {encode_stage:,.0f} chunks/s; "
          f"raw encoder {raw:,.0f} chunks/s (best of 3, after the build); ratios {pipeline / raw:.2f} (whole build, "
          f"target ≥ 0.90) and {encode_stage / raw:.2f} (encode stage)")
    mean_cos, min_cos = bf16_cosine(texts[:256])
    print(f"bf16 vs fp32 key cosine: mean {mean_cos:.5f}, min {min_cos:.5f} (target ≥ 0.99)")
    shards = [memory.dir / "embeddings" / p for p in
              json.loads((memory.dir / "embeddings.manifest.json").read_text())["shards"]]
    recalls = recall_at_2(shards)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "documents": m["n_docs"], "tokens": m["n_tokens"], "chunks": m["n_chunks"],
            "stages": [{"name": t.name, "seconds": t.seconds, "items": t.items, "unit": t.unit} for t in timings],
            "total_seconds": total, "pipeline_chunks_per_s": pipeline, "raw_encoder_chunks_per_s": raw,
            "ratio": pipeline / raw, "encode_stage_chunks_per_s": encode_stage,
            "encode_stage_ratio": encode_stage / raw,
            "encoder": {"model": config.encoder.model, "precision": str(encoder.dtype), "device": str(encoder.device),
                        "batch_size": config.encoder.batch_size, "threads": torch.get_num_threads()},
            "bf16_cosine_mean": mean_cos, "bf16_cosine_min": min_cos,
            "recall_at_2": recalls, "chosen_index": m["index"]}, indent=2))


if __name__ == "__main__":
    main()
