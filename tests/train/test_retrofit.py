"""RETRO-fitting a tiny burrow baseline: base weights frozen (flags, optimizer, bits), only the new modules
train, retrieval-off logits equal the base's exactly at step 0 and after training, the trainable share on
the paper presets, the default CCA placement, clear errors, and the `burrow retrofit` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

import burrow.train.loop as loop
from burrow.artefacts import read_json, write_json
from burrow.cli.retrofit import register
from burrow.errors import BurrowError
from burrow.footprint import read_footprint
from burrow.memory import Memory
from burrow.model import build_model
from burrow.presets import get_preset
from burrow.train import TrainConfig, load_run, train
from burrow.train.retrofit import (
    RetrofitConfig,
    default_cca_layers,
    freeze_base,
    parameter_split,
    retrofit,
    retrofit_model_config,
)

SEQ = 32


@pytest.fixture(scope="module")
def base_run(train_memory: Memory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny baseline (d 32, 2 layers) trained for two steps on the shared tiny memory."""
    root = tmp_path_factory.mktemp("retrofit-base")
    model = root / "base.toml"
    model.write_text('preset = "tiny"\nd_model = 32\nn_layers = 2\nn_heads = 2\nhead_dim = 16\n', encoding="utf-8")
    train(TrainConfig(model=str(model), out=root / "base", memory=train_memory.dir, seq_len=SEQ, steps=2, batch_size=4,
                      eval_every=0, precision="fp32", progress=False))
    return root / "base"


def _config(**kw: Any) -> RetrofitConfig:
    base: dict[str, Any] = dict(steps=3, batch_size=4, seq_len=SEQ, lr=1e-2, warmup=1, eval_every=0,
                                precision="fp32", progress=False)
    base.update(kw)
    return RetrofitConfig(**base)


def _batch(train_memory: Memory, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (2, SEQ), generator=g)
    neighbours = torch.randint(0, vocab, (2, SEQ // train_memory.chunk_size, 2, 2 * train_memory.chunk_size),
                               generator=g)
    return tokens, neighbours


def test_base_frozen_new_modules_train_and_retrieval_off_equals_base(train_memory: Memory, base_run: Path,
                                                                    tmp_path: Path, monkeypatch) -> None:
    base = load_run(base_run).eval()
    tokens, nb = _batch(train_memory, base.config.vocab_size)
    with torch.no_grad():
        base_logits = base(tokens)
    seen: dict[str, Any] = {}
    real_step = loop.train_step

    def spy(model, optimizer, *args, **kwargs):
        if not seen:  # step 0: before any update, retrieval on or off is exactly the base
            with torch.no_grad():
                seen["off0"], seen["on0"] = model(tokens), model(tokens, neighbours=nb)
            seen["frozen"] = {n for n, p in model.named_parameters() if not p.requires_grad}
            seen["optimized"] = {id(p) for g in optimizer.param_groups for p in g["params"]}
            seen["model"] = model
        return real_step(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    result = retrofit(base_run, train_memory.dir, tmp_path / "fit", _config())
    assert torch.equal(seen["off0"], base_logits) and torch.equal(seen["on0"], base_logits)
    base_names = set(base.state_dict())
    assert seen["frozen"] == {n for n, _ in seen["model"].named_parameters()} & base_names
    trained = {id(p) for n, p in seen["model"].named_parameters() if n not in base_names}
    assert seen["optimized"] == trained and result.trainable == sum(p.numel() for p in seen["model"].parameters()
                                                                    if id(p) in trained)
    fitted = load_run(tmp_path / "fit").eval()  # final/ is an ordinary RETRO model
    assert fitted.config.retro and fitted.config.cca_layers == default_cca_layers(base.config.n_layers)
    state = fitted.state_dict()
    for name, p in base.state_dict().items():
        assert torch.equal(state[name], p), name  # every base weight, bit for bit
    assert any(bool(p.abs().sum()) for n, p in state.items() if n.endswith("cca.attn.out.weight"))
    with torch.no_grad():
        assert torch.equal(fitted(tokens), base_logits)  # retrieval off: exactly the base, after training
        assert not torch.equal(fitted(tokens, neighbours=nb), base_logits)  # retrieval on: the new modules act
    assert read_json(tmp_path / "fit" / "config.json")["retrofit"]["kind"] == "burrow"


@pytest.mark.parametrize("preset", ["retro-172m", "retro-425m", "retro-1.5b", "retro-7.5b"])
def test_trainable_share_below_ten_percent_on_paper_presets(preset: str) -> None:
    base_cfg = get_preset(preset, retro=False, cca_layers=())
    cfg = retrofit_model_config(base_cfg, RetrofitConfig(), chunk_size=64)
    assert cfg.cca_layers == tuple(range(6, base_cfg.n_layers + 1, 3)) and cfg.enc_d_model == 896
    with torch.device("meta"):
        base, model = build_model(base_cfg), build_model(cfg)
    freeze_base(model, set(base.state_dict()))
    trainable, total = parameter_split(model)
    assert total == base.num_parameters(non_embedding=False) + trainable
    assert 0 < trainable / total < 0.10


def test_default_cca_layers_follow_the_paper_and_clamp_shallow_models() -> None:
    assert default_cca_layers(12) == (6, 9, 12) and default_cca_layers(30) == (6, 9, 12, 15, 18, 21, 24, 27, 30)
    assert default_cca_layers(8) == (4, 7) and default_cca_layers(6) == (3, 6)
    assert default_cca_layers(2) == (1,) and default_cca_layers(1) == (1,)


def test_clear_errors_for_retro_base_foreign_tokenizer_and_another_base(train_memory: Memory, base_run: Path,
                                                                        tmp_path: Path) -> None:
    retrofit(base_run, train_memory.dir, tmp_path / "fit", _config(steps=1))
    with pytest.raises(BurrowError, match="already a RETRO model"):
        retrofit(tmp_path / "fit", train_memory.dir, tmp_path / "again", _config(steps=1))
    assert retrofit(base_run, train_memory.dir, tmp_path / "fit", _config(steps=1)).train.skipped
    other = tmp_path / "other-base"
    other.mkdir()
    (other / "final").symlink_to(base_run / "final")
    record = read_json(base_run / "config.json")
    write_json(other / "config.json", {**record, "data": {**record["data"], "tokenizer": "0123456789abcdef"}})
    with pytest.raises(BurrowError, match="another tokenizer"):
        retrofit(other, train_memory.dir, tmp_path / "fit2", _config(steps=1))
    write_json(other / "config.json", record)
    with pytest.raises(BurrowError, match="RETRO-fit of"):
        retrofit(other, train_memory.dir, tmp_path / "fit", _config(steps=1))


def test_cli_retrofit_prints_the_trainable_share(train_memory: Memory, base_run: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # two commands: typer keeps `retrofit` as a sub-command
    args = ["retrofit", str(base_run), "--memory", str(train_memory.dir), "-o", str(tmp_path / "run"),
            "--steps", "2", "--batch-size", "2", "--seq-len", str(SEQ), "--cca-layers", "1,2", "--eval-every", "0",
            "--precision", "fp32", "--no-progress"]
    tracked = CliRunner(env={"BURROW_FOOTPRINT": "1"})  # energy and FLOPs, as `train` records them
    result = tracked.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trainable:" in result.output and "retro-fitted 2 steps" in result.output
    assert load_run(tmp_path / "run").config.cca_layers == (1, 2)
    (call,) = read_footprint(tmp_path / "run")["calls"]
    assert call["stage"] == "retrofit" and call["flops"] > 0 and "N_t = " in call["flops_formula"]
    for layers in ("x", ",", " , "):  # "," named no layer and ran with the default placement
        bad = CliRunner(env={"COLUMNS": "300"}).invoke(app, [*args[:-7], "--cca-layers", layers])
        assert bad.exit_code == 2 and "comma-separated" in bad.output  # a usage error, before any work
    final = base_run / "final"  # -o the base's own model folder: the run's config.json replaced the model's
    before = {f.name: f.read_bytes() for f in final.iterdir()}
    with pytest.raises(BurrowError, match="give -o a new folder"):
        retrofit(base_run, train_memory.dir, final, _config(steps=1))
    refused = tracked.invoke(app, [*args[:4], "-o", str(final), *args[6:]])
    assert refused.exit_code != 0 and "give -o a new folder" in str(refused.exception or refused.output)
    assert {f.name: f.read_bytes() for f in final.iterdir()} == before  # no footprint.json either
    with pytest.raises(BurrowError, match="is a memory, not a model"):
        retrofit(train_memory.dir, train_memory.dir, tmp_path / "fit", _config(steps=1))


def test_killed_retrofit_resumes_to_the_uninterrupted_result(train_memory: Memory, base_run: Path, tmp_path: Path,
                                                              monkeypatch) -> None:
    config = _config(steps=4, train_options={"checkpoint_every": 2})
    retrofit(base_run, train_memory.dir, tmp_path / "straight", config)
    real_step, calls = loop.train_step, {"n": 0}

    def dies_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        retrofit(base_run, train_memory.dir, tmp_path / "killed", config)
    monkeypatch.setattr(loop, "train_step", real_step)
    assert retrofit(base_run, train_memory.dir, tmp_path / "killed", config).train.resumed_from == 2
    a, b = load_run(tmp_path / "straight"), load_run(tmp_path / "killed")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
