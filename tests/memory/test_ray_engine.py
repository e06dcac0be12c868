"""The Ray engine builds the same memory as the local engine: chunk table, keys (within bf16), neighbours."""

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
    cos = (ka * kb).sum(1) / np.linalg.norm(ka, axis=1) / np.linalg.norm(kb, axis=1)
    assert cos.min() > 0.999  # bf16 autocast either way; batches may differ, so not bit-equal
    ids_a, _ = local.neighbour_table("self", 2)
    ids_b, _ = Memory(out).neighbour_table("self", 2)
    assert (ids_a == ids_b).mean() > 0.95  # near-ties may swap under bf16 noise


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
