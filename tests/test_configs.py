"""Configs built from configs: a retrofit and the demo hold a TrainConfig (and an EvalConfig); CLI
defaults are the dataclasses' defaults; DEFAULT_K is the one k."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from burrow.cli.options import default_of
from burrow.defaults import DEFAULT_K, K_MAX
from burrow.demo import DEMO_TRAINING, QUICK_TRAINING, DemoConfig
from burrow.errors import BurrowError
from burrow.evaluate import EvalConfig
from burrow.generate import ChatConfig, GenerationConfig
from burrow.serve.schemas import GenerateRequest, ScoreRequest, SearchRequest
from burrow.train import TrainConfig
from burrow.train.retrofit import RETROFIT_TRAINING, RetrofitConfig


def test_retrofit_config_holds_a_train_config() -> None:
    cfg = RetrofitConfig(steps=7, batch_size=2, cca_layers=(1, 2))
    assert isinstance(cfg.train, TrainConfig)
    assert (cfg.steps, cfg.train.steps, cfg.batch_size, cfg.lr) == (7, 7, 2, RETROFIT_TRAINING["lr"])
    assert cfg.eval_every == RETROFIT_TRAINING["eval_every"] and cfg.k == DEFAULT_K
    run = cfg.train_config("base", Path("mem"), Path("out"))
    assert (run.model, run.memory, run.out, run.steps) == ("retrofit:base", Path("mem"), Path("out"), 7)
    # every other training setting is TrainConfig's own default, never a copy
    for f in dataclasses.fields(TrainConfig):
        if f.name not in {"model", "out", "memory", "steps", "batch_size", "lr", "eval_every", "warmup",
                          "checkpoint_every"}:
            assert getattr(run, f.name) == default_of(TrainConfig, f.name), f.name


def test_retrofit_config_validates_its_training_settings_at_once() -> None:
    with pytest.raises(BurrowError, match="grad-accum"):
        RetrofitConfig(batch_size=3, train_options={"grad_accum": 2})
    with pytest.raises(AttributeError):
        _ = RetrofitConfig().no_such_setting


def test_demo_config_holds_train_and_eval_configs(tmp_path: Path) -> None:
    cfg = DemoConfig(out=tmp_path, quick=True, steps=10, k=3)
    assert cfg.train.steps == 10 and cfg.steps == 10
    assert cfg.train.batch_size == QUICK_TRAINING["batch_size"] and cfg.train.lr == DEMO_TRAINING["lr"]
    assert cfg.train.k == cfg.eval.k == 3 and cfg.eval.leakage and cfg.max_eval_docs == 3
    run = cfg.train_config("tiny", tmp_path / "memory", tmp_path / "runs" / "baseline")
    assert (run.model, run.eval_every) == ("tiny", 2)
    assert DemoConfig(out=tmp_path, sweeps=False).eval.sweep_k == ()


def test_one_default_k() -> None:
    assert default_of(TrainConfig, "k") == default_of(EvalConfig, "k") == DEFAULT_K
    assert default_of(GenerationConfig, "k") == default_of(ChatConfig, "k") == DEFAULT_K
    for schema in (GenerateRequest, SearchRequest, ScoreRequest):
        assert schema.model_fields["k"].default == DEFAULT_K
    assert default_of(EvalConfig, "k_max") == K_MAX
