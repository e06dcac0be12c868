"""`burrow train` under torchrun (2 gloo processes): the 1-process loss curve, resharding resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import burrow
from burrow.memory import Memory
from burrow.train import TrainConfig, train

ARGS = ["--seq-len", "32", "--batch-size", "4", "--eval-every", "0", "--precision", "fp32", "--no-progress",
        "--device", "cpu"]


#: Runs `burrow ARGV` in each torchrun process, appending a hash of the process's torch RNG at the start of each
#: training step to PROBE_OUT.rngRANK; torch.compile leaves the model as it is and writes PROBE_OUT.compiledRANK.
PROBE = """
import hashlib, os, sys
import torch
import burrow.train.distributed as D
from burrow.cli import main
out, real_step = os.environ["PROBE_OUT"] + ".rng" + os.environ["RANK"], D._step
def step(*args, **kwargs):
    with open(out, "a") as f:
        f.write(hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest() + "\\n")
    return real_step(*args, **kwargs)
D._step = step
def compile(model, *args, **kwargs):
    open(os.environ["PROBE_OUT"] + ".compiled" + os.environ["RANK"], "w").close()
    return model
torch.compile = compile
sys.argv = ["burrow", *sys.argv[1:]]
main()
"""


def torchrun(nproc: int, *args: str, probe: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node NPROC -m burrow train ARGS`` with this checkout's burrow (``probe``:
    through :data:`PROBE`, recording into PROBE.rngRANK and PROBE.compiledRANK)."""
    env = {**os.environ, "PYTHONPATH": str(Path(burrow.__file__).parents[1]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    entry = ["-m", "burrow"]
    if probe is not None:
        probe.with_suffix(".py").write_text(PROBE, encoding="utf-8")
        entry, env["PROBE_OUT"] = [str(probe.with_suffix(".py"))], str(probe)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *entry, "train", *ARGS, *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def one_process(memory: Memory, toml: str, out: Path, steps: int = 20) -> dict[int, float]:
    train(TrainConfig(model=toml, memory=memory.dir, out=out, steps=steps, batch_size=4, seq_len=32, eval_every=0,
                      precision="fp32", device="cpu", progress=False))
    return losses(out)


def test_two_process_ddp_follows_the_one_process_loss_curve(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    toml = model_toml(tmp_path / "m.toml", retro=False)
    want = one_process(train_memory, toml, tmp_path / "one")
    res = torchrun(2, "-m", toml, "--memory", train_memory.dir, "-o", tmp_path / "two", "--steps", "20")
    assert res.returncode == 0, res.stderr[-2000:]
    got = losses(tmp_path / "two")
    assert sorted(got) == list(range(1, 21))
    assert max(abs(got[s] - want[s]) for s in want) < 1e-4  # same global batch, same step; only sum order differs
    assert (tmp_path / "two" / "checkpoints" / "step_000020" / "dcp").is_dir()
    assert res.stdout.count("trained 20 steps") == 1  # rank 0 reports for both


def test_each_process_draws_its_own_dropout_and_resumes_it_compiled_too(train_memory: Memory, model_toml,
                                                                         tmp_path: Path) -> None:
    """Every rank used one torch RNG stream (seeded alike, restored from rank 0's state on resume): the ranks'
    dropout masks were the same ones."""
    toml = model_toml(tmp_path / "m.toml", retro=False, dropout=0.1)
    run = ["-m", toml, "--memory", train_memory.dir, "-o", tmp_path / "run", "--steps", "4", "--checkpoint-every", "2",
           "--keep-checkpoints", "5"]
    res = torchrun(2, *run, probe=tmp_path / "probe")
    assert res.returncode == 0, res.stderr[-2000:]
    # killed after step 2's checkpoint
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "run" / "final")
    (tmp_path / "run" / "train.manifest.json").unlink()
    assert not (tmp_path / "probe.compiled0").exists()
    res = torchrun(2, *run, "--compile", probe=tmp_path / "probe")  # --compile was ignored under torchrun
    assert res.returncode == 0 and "resumed from step 2" in res.stdout, res.stderr[-2000:]
    assert (tmp_path / "probe.compiled0").exists() and (tmp_path / "probe.compiled1").exists()
    rng = [(tmp_path / f"probe.rng{r}").read_text().split() for r in (0, 1)]
    assert len(rng[0]) == len(rng[1]) == 6  # steps 1-4, then 3-4 resumed
    assert all(a != b for a, b in zip(*rng, strict=True))  # each rank its own masks
    assert len(set(rng[0][:4])) == 4  # each step its own
    assert rng[0][4:] == rng[0][2:4] and rng[1][4:] == rng[1][2:4]  # the resumed steps draw what they drew


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_another_world_size(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    toml = model_toml(tmp_path / "m.toml", retro=False)
    want = one_process(train_memory, toml, tmp_path / "one")
    run = ["-m", toml, "--memory", train_memory.dir, "-o", tmp_path / "fsdp", "--steps", "20",
           "--checkpoint-every", "10", "--keep-checkpoints", "5"]
    assert torchrun(2, *run, "--parallel", "fsdp").returncode == 0
    # killed after step 10's checkpoint: later checkpoint, final model and manifest never written
    shutil.rmtree(tmp_path / "fsdp" / "checkpoints" / "step_000020")
    shutil.rmtree(tmp_path / "fsdp" / "final")
    (tmp_path / "fsdp" / "train.manifest.json").unlink()
    res = torchrun(1, *run)  # 1 process, DDP: the sharded checkpoint reshards
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from step 10" in res.stdout
    got = losses(tmp_path / "fsdp")
    assert abs(got[20] - want[20]) < 1e-4 and sorted(got) == list(range(1, 21))


@pytest.mark.slow
def test_bad_world_sizes_are_one_error_line(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    toml = model_toml(tmp_path / "m.toml", retro=False)
    res = torchrun(2, "-m", toml, "--memory", train_memory.dir, "-o", tmp_path / "odd", "--steps", "2",
                   "--batch-size", "3")
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode != 0 and errors == [
        "error: 2 processes cannot split a batch of 3 sequences; make --batch-size a multiple of --nproc_per_node"]


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_one_process_checkpoint_resumes_on_two(train_memory: Memory, model_toml, tmp_path: Path,
                                                 parallel: str) -> None:
    """A one-process checkpoint (plain state.pt, no dcp/) was refused on any other number of processes or
    under FSDP; its full model and optimizer state now load into each rank (sharded under FSDP)."""
    toml = model_toml(tmp_path / "m.toml", retro=False)
    run = ["--checkpoint-every", "2", "--keep-checkpoints", "5"]
    train(TrainConfig(model=toml, memory=train_memory.dir, out=tmp_path / "plain", steps=4, batch_size=4, seq_len=32,
                      eval_every=0, checkpoint_every=2, keep_checkpoints=5, precision="fp32", device="cpu",
                      progress=False))
    want = losses(tmp_path / "plain")
    # killed after step 2's checkpoint
    shutil.rmtree(tmp_path / "plain" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "plain" / "final")
    (tmp_path / "plain" / "train.manifest.json").unlink()
    res = torchrun(2, "-m", toml, "--memory", train_memory.dir, "-o", tmp_path / "plain", "--steps", "4", *run,
                   "--parallel", parallel)
    assert res.returncode == 0 and "resumed from step 2" in res.stdout, res.stderr[-2000:]
    got = losses(tmp_path / "plain")
    assert sorted(got) == [1, 2, 3, 4] and max(abs(got[s] - want[s]) for s in want) < 1e-4  # step 4: optimizer state


@pytest.mark.slow
def test_a_torchrun_checkpoint_resumes_in_one_process(train_memory: Memory, model_toml, tmp_path: Path) -> None:
    """One process refused a torchrun checkpoint (sharded optimizer state): every checkpoint was passed over with a
    warning and the run ended in 'none of the checkpoints can be loaded; re-run with --force', or fell back silently
    to an older one-process checkpoint. It now reads the sharded state."""
    toml = model_toml(tmp_path / "m.toml", retro=False)
    want = one_process(train_memory, toml, tmp_path / "one", steps=4)
    res = torchrun(2, "-m", toml, "--memory", train_memory.dir, "-o", tmp_path / "two", "--steps", "4",
                   "--checkpoint-every", "2", "--keep-checkpoints", "5")
    assert res.returncode == 0, res.stderr[-2000:]
    # killed after step 2's checkpoint
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "two" / "final")
    (tmp_path / "two" / "train.manifest.json").unlink()
    resumed = train(TrainConfig(model=toml, memory=train_memory.dir, out=tmp_path / "two", steps=4, batch_size=4,
                                seq_len=32, eval_every=0, checkpoint_every=2, keep_checkpoints=5, precision="fp32",
                                device="cpu", progress=False))
    assert resumed.resumed_from == 2
    got = losses(tmp_path / "two")
    assert sorted(got) == [1, 2, 3, 4] and max(abs(got[s] - want[s]) for s in want) < 1e-4  # step 4: optimizer state


#: Runs `burrow ARGV` in each torchrun process with every training loss times LOSS_FACTOR (2**8: a tiny model's
#: gradients overflow fp16 at the initial loss scale).
SCALED = """
import os, sys
import burrow.train.distributed as D
from burrow.cli import main
real, factor = D._loss_sum, float(os.environ["LOSS_FACTOR"])
D._loss_sum = lambda *args, **kwargs: real(*args, **kwargs) * factor
sys.argv = ["burrow", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_fp16_under_torchrun_skips_overflowing_steps_and_resumes_the_loss_scale(train_memory: Memory, model_toml,
                                                                                 tmp_path: Path, parallel: str) -> None:
    """fp16 under torchrun ran without loss scaling. Every rank now skips the same overflowing steps (the scale
    halves), AdamW counts only the steps it took, and a resumed run continues with the checkpoint's scale."""
    import torch

    toml = model_toml(tmp_path / "m.toml", retro=False)
    script = tmp_path / "scaled.py"
    script.write_text(SCALED, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(burrow.__file__).parents[1]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "LOSS_FACTOR": str(2.0**8)}
    fp16 = [a if a != "fp32" else "fp16" for a in ARGS]
    args = [*fp16, "-m", toml, "--memory", train_memory.dir, "-o", tmp_path / "run",
            "--steps", "6", "--checkpoint-every", "2", "--keep-checkpoints", "5", "--parallel", parallel]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), "train",
           *map(str, args)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    want = [(r["loss"], r["loss_scale"], r["skipped_steps"]) for r in rows]
    skipped = rows[-1]["skipped_steps"]
    assert rows[0]["loss_scale"] == 2.0**16 and rows[0]["grad_norm"] is None and 3 <= skipped < 6
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_000006" / "state.pt", weights_only=True)
    manifest = json.loads((tmp_path / "run" / "train.manifest.json").read_text())
    assert state["skipped_steps"] == manifest["skipped_steps"] == skipped
    assert state["scaler"]["scale"] == manifest["loss_scale"] < 2.0**16
    # killed after step 4's checkpoint
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_000006")
    shutil.rmtree(tmp_path / "run" / "final")
    (tmp_path / "run" / "train.manifest.json").unlink()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "resumed from step 4" in res.stdout, res.stderr[-2000:]
    got = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["loss"], r["loss_scale"], r["skipped_steps"]) for r in got] == want
    # AdamW's own step count (its bias correction) is the number of steps it took, on every rank
    from burrow.model import load_model
    from burrow.train.checkpoint import load_sharded
    from burrow.train.optim import build_optimizer

    model = load_model(tmp_path / "run" / "checkpoints" / "step_000006")
    optimizer = build_optimizer(model, TrainConfig(model=toml, out=tmp_path / "x", tokens=tmp_path))
    load_sharded(tmp_path / "run" / "checkpoints" / "step_000006", model, optimizer)
    assert {float(s["step"]) for s in optimizer.state.values()} == {6.0 - skipped}


def test_more_processes_than_gpus_is_one_error_line(tmp_path: Path, monkeypatch) -> None:
    """torchrun --nproc_per_node 4 on a 2-GPU node: ranks 2 and 3 failed in torch.cuda.set_device with CUDA's
    'invalid device ordinal' traceback."""
    import torch

    from burrow.errors import BurrowError
    from burrow.train.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)  # CUDA's own failure: reached, not raised
    for name, value in (("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "3"), ("LOCAL_WORLD_SIZE", "4")):
        monkeypatch.setenv(name, value)
    config = TrainConfig(model="tiny", out=tmp_path / "run", tokens=tmp_path, batch_size=4, device="cuda")
    with pytest.raises(BurrowError, match="4 processes on this node but 2 GPU"):
        init_distributed(config)
