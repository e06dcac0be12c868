"""TrainConfig validation, run-config TOML, and model specs sized by the data (never silently changed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from burrow.errors import BurrowError
from burrow.train import TrainConfig, resolve_model_config


def test_train_config_validates_and_fills_defaults() -> None:
    cfg = TrainConfig(model="tiny", out=Path("r"), tokens=Path("t"), steps=100, eval_every=20)
    assert cfg.warmup == 10 and cfg.checkpoint_every == 20 and cfg.micro_batch == 8
    with pytest.raises(BurrowError, match="grad-accum"):
        TrainConfig(model="tiny", out=Path("r"), tokens=Path("t"), batch_size=6, grad_accum=4)
    with pytest.raises(BurrowError, match="needs data"):
        TrainConfig(model="tiny", out=Path("r"))
    with pytest.raises(BurrowError, match="precision"):
        TrainConfig(model="tiny", out=Path("r"), tokens=Path("t"), precision="fp8")


def test_run_config_toml_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text('[train]\nmodel = "tiny"\nout = "r"\ntokens = "t"\nsteps = 50\nlr = 1e-3\n')
    cfg = TrainConfig.from_toml(tmp_path / "run.toml", steps=60, lr=None)
    assert cfg.steps == 60 and cfg.lr == 1e-3 and cfg.tokens == Path("t")
    (tmp_path / "bad.toml").write_text('model = "tiny"\nout = "r"\nstepz = 5\n')
    with pytest.raises(BurrowError, match="stepz"):
        TrainConfig.from_toml(tmp_path / "bad.toml")


def test_model_spec_is_sized_by_the_data(tmp_path: Path) -> None:
    cfg = resolve_model_config("retro-tiny", vocab_size=400, chunk_size=8, seq_len=512, pad_id=3)
    assert (cfg.vocab_size, cfg.chunk_size, cfg.retrieved_len, cfg.max_seq_len, cfg.pad_id) == (400, 8, 16, 512, 3)
    assert resolve_model_config("tiny", vocab_size=400, chunk_size=8, seq_len=512, pad_id=3).pad_id is None
    toml = tmp_path / "m.toml"
    toml.write_text('preset = "retro-tiny"\nchunk_size = 16\n')
    with pytest.raises(BurrowError, match="chunk_size = 16 but the data needs 8"):
        resolve_model_config(str(toml), vocab_size=400, chunk_size=8, seq_len=64)
    toml.write_text('[model]\npreset = "tiny"\nd_model = 64\nn_heads = 2\nhead_dim = 32\n')
    cfg = resolve_model_config(str(toml), vocab_size=400, chunk_size=None, seq_len=64)
    assert cfg.d_model == 64 and cfg.d_ffw == 256 and cfg.chunk_size == 64 and not cfg.retro
