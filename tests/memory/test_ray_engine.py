"""The Ray engine builds the same memory as the local engine: chunk table, keys and neighbours, to the bit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from burrow.cli import main
from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.memory.build import build_memory, compute_neighbours
from burrow.memory.chunks import ChunkTable
from burrow.memory.keys import key_shard_paths, load_shards

ray = pytest.importorskip("ray")

ARGS = ["--vocab-size", "400", "--chunk-size", "8", "--shard-size", "64", "--workers", "2"]


@pytest.fixture(scope="module")
def local_ray():
    """One local 2-CPU Ray for the module (starting Ray costs seconds)."""
    from burrow.memory.ray_engine import RayConfig, init_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    init_ray(RayConfig(workers=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def built(local_ray, tmp_path_factory, make_corpus, encoder):
    """The same corpus built by both engines: (corpus, local memory, Ray memory dir)."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig
    from burrow.memory.encode import EncoderConfig

    tmp = tmp_path_factory.mktemp("engines")
    corpus = make_corpus(tmp / "corpus", repeats=4)  # ~300 chunks of 8 tokens: 5 shards of 64
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=64), chunk_size=8)
    local, _ = build_memory([str(corpus)], tmp / "local", config, progress=False, encoder=encoder)
    compute_neighbours(local, k=2, progress=False)
    mp = pytest.MonkeyPatch()
    code = _main(mp, "memory", "build", corpus, "-o", tmp / "ray", "--engine", "ray", "-k", "2", *ARGS)
    mp.undo()
    assert code == 0
    return corpus, local, tmp / "ray"


def _main(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["burrow", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_ray_build_matches_local(built) -> None:
    corpus, local, out = built
    a, b = ChunkTable.load(local.dir / "chunks.npz"), ChunkTable.load(out / "chunks.npz")
    assert len(a) > 256
    for field in ("starts", "lengths", "docs"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    ka, kb = load_shards(key_shard_paths(local.dir)), load_shards(key_shard_paths(out))
    assert ka.shape == kb.shape and len(key_shard_paths(out)) == 5
    assert np.array_equal(ka, kb)  # the same batches either way (memory.encode.encode_shard)
    ids_a, _ = local.neighbour_table("self", 2)
    ids_b, _ = Memory(out).neighbour_table("self", 2)
    assert np.array_equal(ids_a, ids_b)


@pytest.mark.slow
def test_ray_build_resumes_shard_by_shard(built, burrow_cli) -> None:
    corpus, _, out = built
    kb = load_shards(key_shard_paths(out))
    # Killed mid-encode: one shard and the stage manifest gone; a re-run re-encodes that shard only.
    kept = {p: p.stat().st_mtime_ns for p in key_shard_paths(out) if not p.name.endswith("2.npy")}
    (out / "embeddings" / "shard_00002.npy").unlink()
    (out / "embeddings.manifest.json").unlink()
    code, stdout, err = burrow_cli("memory", "build", corpus, "-o", out, "--engine", "ray", *ARGS)
    assert code == 0, err
    assert (out / "embeddings" / "shard_00002.npy").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert np.allclose(load_shards(key_shard_paths(out)), kb, atol=1e-6)


def test_unreachable_address_is_one_error_line(tmp_path: Path, make_corpus, burrow_cli) -> None:
    corpus = make_corpus(tmp_path / "corpus", repeats=1)
    code, _, err = burrow_cli("memory", "build", corpus, "-o", tmp_path / "m", "--engine", "ray",
                              "--address", "127.0.0.1:9", *ARGS)
    assert code != 0 and err.startswith("error: cannot reach a Ray cluster at '127.0.0.1:9'")
    assert "Traceback" not in err and not (tmp_path / "m").exists()


def test_no_ray_installed_is_a_clear_error(monkeypatch) -> None:
    from burrow.memory import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(BurrowError, match=r"pip install 'burrow\[scale\]'"):
        ray_engine.build_memory_ray(["x"], "unused")


def test_a_ray_shard_holds_the_local_engines_keys_to_the_bit(tmp_path: Path, make_corpus, encoder,
                                                             monkeypatch) -> None:
    """The actor encoded a whole shard in one call, the local engine PROGRESS_STEP texts at a time: other
    batches, other padding, keys differing in their last bits (on 124 of 1,607 WikiText chunks, shards of 8192)."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory import encode as encode_mod
    from burrow.memory.build import MemoryConfig
    from burrow.memory.chunks import chunk_tokens
    from burrow.memory.encode import EncoderConfig, encode_sharded
    from burrow.memory.ray_engine import _ShardEncoderActor

    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=64),
                          chunk_size=8)
    memory, _ = build_memory([str(make_corpus(tmp_path / "corpus"))], tmp_path / "mem", config, progress=False,
                             encoder=encoder)
    monkeypatch.setattr(encode_mod, "PROGRESS_STEP", 16)  # a shard of 64 texts: four steps, batches of 8
    actor = _ShardEncoderActor(str(memory.dir), EncoderConfig(shard_size=64, batch_size=8))
    actor({"shard": np.array([0]), "start": np.array([0]), "stop": np.array([64])})
    tok = memory.tokenizer
    local = encode_sharded(actor.encoder, lambda a, b: tok.decode_batch(
        chunk_tokens(memory.store, memory.chunks, np.arange(a, b)).tolist()), 64, tmp_path / "local")
    assert np.array_equal(np.load(memory.dir / "embeddings" / "shard_00000.npy"), np.load(local[0]))
