"""Can RETRO use retrieval at all? An oracle-retrieval control that needs no encoder or FAISS.

Builds, from an existing memory, a copy in which every document appears twice (as two documents)
and each chunk's neighbour table points at the same chunk of the twin document — a retrieval
that always returns the true [chunk, continuation]. Same-document exclusion still holds (the twin is
another document). A baseline and its RETRO twin then train on it for the same steps; a working
RETRO must drive its loss far below the baseline's, because the continuation it retrieves is the
text it has to predict. This separates "the model cannot use neighbours" from "the neighbours of
this corpus carry little the model can use".

    python bench/oracle_retrieval.py --memory MEM --out DIR [--docs 300] [--steps 300] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from burrow.artefacts import config_hash, write_json, write_manifest
from burrow.memory import Memory
from burrow.memory.build import neighbour_table_paths
from burrow.memory.chunks import chunk_table


def twin_memory(src: Memory, out: Path, n_docs: int) -> Memory:
    """A memory whose first ``n_docs`` documents each appear twice, with oracle neighbours."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "tokens").mkdir(parents=True)
    store = src.store
    n_docs = min(n_docs, store.n_docs)
    docs = [store.document(d) for d in range(n_docs)]
    toks = np.concatenate(docs + docs).astype(store.dtype)
    toks.tofile(out / "tokens" / "tokens.bin")
    lengths = np.array([len(d) for d in docs + docs])
    np.save(out / "tokens" / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    lines = (out / "tokens" / "documents.jsonl")
    with open(lines, "w", encoding="utf-8") as f:
        for copy in ("a", "b"):
            for d in range(n_docs):
                info = store.docs[d]
                f.write(json.dumps({"id": f"{info.id}/{copy}", "source": info.source, "title": info.title,
                                    "bytes": info.bytes}) + "\n")
    man = {k: v for k, v in store.manifest.items() if k not in ("kind", "format_version")}
    man.update(n_tokens=int(toks.size), n_docs=2 * n_docs, inputs=config_hash(["twin", n_docs, man["inputs"]]))
    write_manifest(out / "tokens", "tokens", **man)
    for name in (src.manifest["tokenizer_file"], "tokenizer.manifest.json"):
        shutil.copy(src.dir / name, out / name)
    memory_manifest = {k: v for k, v in src.manifest.items() if k not in ("kind", "format_version")}
    memory_manifest.update(n_docs=2 * n_docs, n_tokens=int(toks.size))
    write_manifest(out, "memory", **memory_manifest)
    mem = Memory(out)
    table = chunk_table(mem.store, mem.chunk_size)
    table.save(out / "chunks.npz")
    write_manifest(out, "chunks", inputs="twin", n_chunks=len(table), chunk_size=table.chunk_size)
    _oracle_table(Memory(out), table.docs)
    return Memory(out)


def unrelated_chunks(docs: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each chunk, a random chunk of another document (same-document exclusion holds for it too: a draw
    over all chunks could return the chunk itself or its document's next one, the very text to predict)."""
    n = len(docs)
    rng = np.random.default_rng(seed)
    other = rng.integers(0, n, size=n)
    clash = docs[other] == docs
    while clash.any():  # redraw the few that hit their own document
        other[clash] = rng.integers(0, n, size=int(clash.sum()))
        clash = docs[other] == docs
    return other


def _oracle_table(mem: Memory, docs: np.ndarray, k: int = 2) -> None:
    n = len(docs)
    half = n // 2
    twin = np.concatenate([np.arange(half, n), np.arange(0, half)])  # chunk i of copy a <-> chunk i of copy b
    other = unrelated_chunks(docs)  # a second, unrelated neighbour
    ids = np.stack([twin, other], axis=1).astype(np.int64)
    ids_p, dist_p, kind = neighbour_table_paths(mem.dir, "self", k)
    ids_p.parent.mkdir(parents=True, exist_ok=True)
    np.save(ids_p, ids)
    np.save(dist_p, np.zeros(ids.shape, dtype=np.float32))
    inputs = config_hash({"memory": mem.manifest, "store": mem.store.manifest.get("inputs", mem.store.manifest),
                          "k": k, "m": mem.chunk_size})
    write_manifest(ids_p.parent, kind, inputs=inputs, name="self", k=k, n_chunks=n, target=str(mem.store.dir),
                   exclude_same_document=True, chunk_size=mem.chunk_size, missing=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from burrow.train import TrainConfig, train

    mem = twin_memory(Memory(args.memory), args.out / "twin-memory", args.docs)
    results = {}
    for preset in (args.preset, f"retro-{args.preset}"):
        r = train(TrainConfig(model=preset, memory=mem.dir, out=args.out / preset, steps=args.steps,
                              batch_size=args.batch_size, seq_len=256, lr=1e-3, device=args.device,
                              eval_every=max(1, args.steps // 3), progress=False, force=True))
        results[preset] = {"loss": r.loss, "val_loss": r.val_loss}
        print(f"{preset:<14} train loss {r.loss:.4f}  val loss {r.val_loss:.4f}")
    write_json(args.out / "oracle.json", results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
