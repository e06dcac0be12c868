"""``--compile``: the compiled training step trains the same model (losses equal to eager within rounding)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from burrow.memory import Memory
from burrow.train import TrainConfig, train


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # compiling costs tens of seconds on CPU
def test_compiled_training_equals_eager(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    model = model_toml(tmp_path / "model.toml", retro=True)
    runs = {}
    for name, compile_model in (("eager", False), ("compiled", True)):
        runs[name] = train(TrainConfig(model=model, out=tmp_path / name, memory=train_memory.dir, seq_len=32, steps=3,
                                       batch_size=4, lr=3e-3, warmup=1, eval_every=0, precision="fp32",
                                       progress=False, compile=compile_model))
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4)
    assert runs["compiled"].val_loss == pytest.approx(runs["eager"].val_loss, rel=1e-4)
