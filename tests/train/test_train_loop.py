"""The loop: kill + resume reproduces the uninterrupted loss curve; gradient accumulation changes nothing;
finished runs are skipped; a run dir made from other data is an error; load_run gives the final model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import burrow.train.loop as loop
from burrow.artefacts import read_json, write_json
from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.model import load_model
from burrow.train import TrainConfig, load_run, train
from burrow.train.optim import lr_at


def _config(mem: Memory, model: str, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(model=model, out=out, memory=mem.dir, seq_len=32, steps=6, batch_size=4,
                                   lr=3e-3, warmup=2, eval_every=2, checkpoint_every=2, keep_checkpoints=2,
                                   valid_fraction=0.1, precision="fp32", progress=False)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _curve(run: Path) -> list[tuple[int, float, float | None]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("val_loss")) for r in rows]


def _dies_at_step_6(real_step):
    """``train_step`` that is interrupted at its 6th call: step 5 ran and was logged, the newest checkpoint is 4."""
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    return step


@pytest.mark.parametrize("retro", [False, True])
def test_kill_and_resume_reproduces_the_uninterrupted_run(train_memory: Memory, model_toml, tmp_path: Path,
                                                          monkeypatch, retro: bool) -> None:
    model = model_toml(tmp_path / "model.toml", retro=retro, dropout=0.1)  # dropout: RNG must resume too
    straight = train(_config(train_memory, model, tmp_path / "straight"))
    assert straight.steps == 6 and straight.resumed_from is None

    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", _dies_at_step_6(real_step))
    with pytest.raises(KeyboardInterrupt):
        train(_config(train_memory, model, tmp_path / "killed"))
    assert [s for s, _, _ in _curve(tmp_path / "killed")] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(loop, "train_step", real_step)
    resumed = train(_config(train_memory, model, tmp_path / "killed"))
    assert resumed.resumed_from == 4
    assert _curve(tmp_path / "killed") == _curve(tmp_path / "straight")  # bit-identical losses, same steps
    a, b = load_run(tmp_path / "straight"), load_run(tmp_path / "killed")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    # only the newest two checkpoints stay
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step_000004", "step_000006"]


def test_gradient_accumulation_changes_nothing_but_memory(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    model = model_toml(tmp_path / "model.toml", retro=False)
    one = train(_config(train_memory, model, tmp_path / "a", steps=3, eval_every=0))
    two = train(_config(train_memory, model, tmp_path / "b", steps=3, eval_every=0, grad_accum=2))
    for (_, la, _), (_, lb, _) in zip(_curve(tmp_path / "a"), _curve(tmp_path / "b"), strict=True):
        assert la == pytest.approx(lb, rel=1e-5)
    assert one.val_loss == pytest.approx(two.val_loss, rel=1e-4)


def test_finished_run_is_skipped_and_other_data_is_an_error(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    model = model_toml(tmp_path / "model.toml", retro=True)
    first = train(_config(train_memory, model, tmp_path / "run", steps=2, eval_every=0))
    final = load_model(first.model_dir)
    assert final.config.retro and final.config.chunk_size == 8 and final.config.retrieved_len == 16
    assert final.config.pad_id == train_memory.store.pad_id  # neighbour padding is masked
    record = read_json(tmp_path / "run" / "config.json")
    assert record["data"]["memory"]
    del record["model"]["pad_id"]  # a run recorded before padding was masked is still the same run
    write_json(tmp_path / "run" / "config.json", record)
    again = train(_config(train_memory, model, tmp_path / "run", steps=2, eval_every=0))
    assert again.skipped
    with pytest.raises(BurrowError, match="other settings"):
        train(_config(train_memory, model, tmp_path / "run", steps=3, eval_every=0))
    # another memory (same tokenizer, different content) -> one clear error, nothing overwritten
    other = tmp_path / "other-mem"
    shutil.copytree(train_memory.dir, other)
    manifest = read_json(other / "memory.manifest.json")
    write_json(other / "memory.manifest.json", {**manifest, "n_docs": manifest["n_docs"] + 1})
    with pytest.raises(BurrowError, match="another memory"):
        train(_config(Memory(other), model, tmp_path / "run", steps=2, eval_every=0))
    # --force retrains
    forced = train(_config(Memory(other), model, tmp_path / "run", steps=2, eval_every=0, force=True))
    assert not forced.skipped and forced.resumed_from is None


def test_retro_needs_a_memory(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    model = model_toml(tmp_path / "model.toml", retro=True)
    cfg = _config(train_memory, model, tmp_path / "run", memory=None, tokens=train_memory.store.dir)
    with pytest.raises(BurrowError, match="needs --memory"):
        train(cfg)
    with pytest.raises(BurrowError, match="holds no trained model"):
        load_run(tmp_path / "nothing")


def test_killed_after_the_last_checkpoint_finishes_on_rerun(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    model = model_toml(tmp_path / "model.toml", retro=False)
    first = train(_config(train_memory, model, tmp_path / "run", steps=2, eval_every=0))
    shutil.rmtree(tmp_path / "run" / "final")  # as if killed between the last checkpoint and final/
    (tmp_path / "run" / "train.manifest.json").unlink()
    again = train(_config(train_memory, model, tmp_path / "run", steps=2, eval_every=0))
    assert again.resumed_from == 2 and again.loss == first.loss
    assert first.val_loss is not None and again.val_loss == first.val_loss  # was None: no step ran to validate
    assert read_json(tmp_path / "run" / "train.manifest.json")["val_loss"] == first.val_loss
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_train_mode_keeps_a_frozen_bases_dropout_off() -> None:
    """A RETRO-fit of a base trained with dropout: the frozen base runs as at evaluation (its dropout off), the
    new modules train; before, model.train() put the whole model, base included, in training mode."""
    from burrow.model import build_model
    from burrow.presets import get_preset
    from burrow.train.loop import train_mode

    cfg = get_preset("retro-tiny", vocab_size=50, d_model=32, n_layers=2, n_heads=2, head_dim=16, chunk_size=4,
                     retrieved_len=8, enc_d_model=16, enc_n_heads=1, enc_head_dim=16, cca_layers=(2,), dropout=0.3)
    model = build_model(cfg)
    for name, p in model.named_parameters():
        p.requires_grad_("cca" in name or "encoder" in name)  # a fit: base frozen
    train_mode(model)
    tokens = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(tokens), model(tokens))  # no neighbours: the base alone, deterministic
    new = [m for n, m in model.named_modules() if n.endswith((".cca", "encoder"))]
    assert new and all(m.training for m in new) and not model.blocks[0].attn.training
    for p in model.parameters():
        p.requires_grad_(True)
    train_mode(model)
    with torch.no_grad():
        assert not torch.equal(model(tokens), model(tokens))  # plain training: dropout on


def test_rng_state_of_a_machine_with_more_gpus_restores_on_fewer(monkeypatch) -> None:
    """state.pt keeps every visible GPU's RNG; torch.cuda.set_rng_state_all raised IndexError (its
    default_generators[i]) for the GPUs a smaller machine lacks, so such a checkpoint could not resume."""
    from burrow.train import checkpoint

    state = checkpoint.rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 8  # saved on an 8-GPU node
    restored: list[int] = []

    def set_all(states):  # torch's behaviour on a 2-GPU machine
        for i, s in enumerate(states):
            torch.cuda.set_rng_state(s, i)

    def set_one(s, i):
        if i >= 2:
            raise IndexError("tuple index out of range")
        restored.append(i)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_one)
    checkpoint.set_rng_state(state)
    assert restored == [0, 1]


def _scaled_loss(monkeypatch, factor: float) -> None:
    """Multiply every training loss by ``factor``: 2**-20 puts a tiny model's gradients where a large model's
    are (below fp16's smallest value), 2**8 makes them overflow fp16 at the initial loss scale of 2**16."""
    real = loop._loss_sum
    monkeypatch.setattr(loop, "_loss_sum", lambda *args, **kwargs: real(*args, **kwargs) * factor)


def _rows(run: Path) -> list[dict[str, object]]:
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_fp16_scales_the_loss_so_small_gradients_reach_the_optimizer(train_memory: Memory, model_toml,
                                                                     tmp_path: Path, monkeypatch) -> None:
    """fp16 autocast trained without loss scaling: gradients below fp16's range flushed to zero in the fp16
    matmuls' backward, and 80% of the weight matrices reached AdamW with all-zero gradients."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    _scaled_loss(monkeypatch, 2.0**-20)
    reached: list[float] = []  # per step: the share of weight matrices with a non-zero gradient

    def seen(optimizer, args, kwargs) -> None:
        matrices = [p for group in optimizer.param_groups for p in group["params"] if p.dim() == 2]
        reached.append(sum(p.grad is not None and bool(p.grad.any()) for p in matrices) / len(matrices))

    hook = register_optimizer_step_pre_hook(seen)
    try:
        result = train(_config(train_memory, model_toml(tmp_path / "model.toml", retro=False), tmp_path / "run",
                               steps=2, eval_every=0, precision="fp16", grad_accum=2))
    finally:
        hook.remove()
    assert reached == [1.0, 1.0]
    rows = _rows(tmp_path / "run")
    assert [(r["loss_scale"], r["skipped_steps"]) for r in rows] == [(2.0**16, 0), (2.0**16, 0)]
    assert all(0 < r["grad_norm"] < 1e-4 for r in rows)  # clipping saw the true (unscaled) gradients
    manifest = read_json(result.run_dir / "train.manifest.json")
    assert manifest["loss_scale"] == 2.0**16 and manifest["skipped_steps"] == 0


def test_an_fp16_run_killed_and_resumed_continues_with_the_same_loss_scale(train_memory: Memory, model_toml,
                                                                            tmp_path: Path, monkeypatch) -> None:
    """The first steps overflow at the initial scale and are skipped (the scale halves each time); the
    checkpoint keeps the scale, so the resumed run skips what the uninterrupted one skipped."""
    _scaled_loss(monkeypatch, 2.0**8)
    model = model_toml(tmp_path / "model.toml", retro=False, dropout=0.1)
    train(_config(train_memory, model, tmp_path / "straight", precision="fp16"))
    rows = _rows(tmp_path / "straight")
    assert [r["skipped_steps"] for r in rows] == [1, 2, 3, 4, 4, 4]  # steps 1-4 overflowed, counted as steps
    assert [r["loss_scale"] for r in rows] == [2.0**16, 2.0**15, 2.0**14, 2.0**13, 2.0**12, 2.0**12]
    assert [r["grad_norm"] is None for r in rows] == [True] * 4 + [False] * 2
    config = _config(train_memory, model, tmp_path / "straight")
    assert [r["lr"] for r in rows] == [lr_at(s, config) for s in range(6)]  # the schedule follows the step
    assert read_json(tmp_path / "straight" / "train.manifest.json")["skipped_steps"] == 4

    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", _dies_at_step_6(real_step))
    with pytest.raises(KeyboardInterrupt):
        train(_config(train_memory, model, tmp_path / "killed", precision="fp16"))
    monkeypatch.setattr(loop, "train_step", real_step)
    shutil.copytree(tmp_path / "killed", tmp_path / "old")
    resumed = train(_config(train_memory, model, tmp_path / "killed", precision="fp16"))
    assert resumed.resumed_from == 4
    assert _rows(tmp_path / "killed") == rows  # same losses, scales and skipped steps
    for p, q in zip(load_run(tmp_path / "straight").parameters(), load_run(tmp_path / "killed").parameters(),
                    strict=True):
        assert torch.equal(p, q)

    # a checkpoint written before fp16 runs kept a scale still resumes; its scaler starts again
    state_file = tmp_path / "old" / "checkpoints" / "step_000004" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    assert state["scaler"]["scale"] == 2.0**12 and state["skipped_steps"] == 4
    torch.save({k: v for k, v in state.items() if k not in ("scaler", "skipped_steps")}, state_file)
    old = train(_config(train_memory, model, tmp_path / "old", precision="fp16"))
    assert old.resumed_from == 4 and _rows(tmp_path / "old")[4]["loss_scale"] == 2.0**16


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_and_fp32_runs_have_no_loss_scaling(train_memory: Memory, model_toml, tmp_path: Path,
                                                 precision: str) -> None:
    train(_config(train_memory, model_toml(tmp_path / "model.toml", retro=False), tmp_path / "run", steps=2,
                  eval_every=0, precision=precision))
    assert all("loss_scale" not in r and r["grad_norm"] is not None for r in _rows(tmp_path / "run"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_000002" / "state.pt", weights_only=True)
    assert "scaler" not in state and "loss_scale" not in read_json(tmp_path / "run" / "train.manifest.json")
