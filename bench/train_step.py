"""Train-step throughput: burrow's baseline and RETRO vs lucidrains' retro-pytorch at the same shape.

    python bench/train_step.py [--preset retro-cpu-base] [--peer-python /tmp/retro-peer-venv/bin/python]

Measures, in one run on one machine: tokens/s of forward + backward + AdamW for the baseline and
RETRO (sequence 512, batch 4, k = 2 by default), the FLOP/s they achieve (FLOPs counted by torch's
FlopCounterMode over one step, so the encoder's 4x tokens and CCA count; causal self-attention is
counted at half of its full n x n cost), this machine's bf16 (or fp32) matmul peak, and the same
tokens/s for retro-pytorch run in a subprocess from its own virtualenv (its model runs offline on
token ids). The machine may be shared: compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from burrow.device import autocast, autocast_dtype, pick_device  # noqa: E402
from burrow.model import ModelConfig, build_model  # noqa: E402
from burrow.presets import get_preset  # noqa: E402

PEER_SCRIPT = r"""
import json, sys, time, torch
from retro_pytorch import RETRO
a = json.loads(sys.argv[1])
torch.manual_seed(0)
model = RETRO(num_tokens=a["vocab"], max_seq_len=a["seq"], enc_dim=a["enc_d"], enc_depth=a["enc_layers"],
              dec_dim=a["d"], dec_depth=a["layers"], heads=a["heads"], dim_head=a["head_dim"],
              dec_cross_attn_layers=tuple(a["cca"]), chunk_size=a["m"])
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
b, n, k, l = a["batch"], a["seq"], a["k"], a["seq"] // a["m"]
seq = torch.randint(1, a["vocab"], (b, n + 1))
ret = torch.randint(1, a["vocab"], (b, l, k, 2 * a["m"]))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a["bf16"]):
        loss = model(seq, ret, return_loss=True)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(a["warmup"]):
    step()
t0 = time.perf_counter()
for _ in range(a["steps"]):
    step()
dt = (time.perf_counter() - t0) / a["steps"]
print(json.dumps({"tokens_per_s": b * n / dt, "params": sum(p.numel() for p in model.parameters())}))
"""


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, reps: int = 6) -> float:
    """Best observed FLOP/s of a square matmul in ``dtype`` (the machine's practical peak)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_batch(cfg: ModelConfig, batch: int, seq: int, k: int, device: torch.device):
    """Random token ids (b, n+1) and, for RETRO, neighbours (b, n/m, k, r)."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g).to(device)
    nb = None
    if cfg.retro:
        shape = (batch, seq // cfg.chunk_size, k, cfg.retrieved_len)
        nb = torch.randint(0, cfg.vocab_size, shape, generator=g).to(device)
    return tokens, nb


def train_step(model, opt, tokens, nb, device, dtype) -> None:
    """One forward + backward + AdamW step on next-token prediction."""
    with autocast(device, dtype):
        logits = model(tokens[:, :-1], neighbours=nb)  # (b, n, v)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def step_flops(cfg: ModelConfig, model, tokens, nb, device, dtype) -> float:
    """FLOPs of one fwd+bwd, causal self-attention counted at half its full-square cost."""
    with FlopCounterMode(display=False) as counter:
        with autocast(device, dtype):
            logits = model(tokens[:, :-1], neighbours=nb)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
    model.zero_grad(set_to_none=True)
    b, n = tokens.shape[0], tokens.shape[1] - 1
    causal_full = 3 * 4 * b * n * n * cfg.n_heads * cfg.head_dim * cfg.n_layers  # fwd + 2x bwd
    return counter.get_total_flops() - causal_full / 2


def bench_ours(cfg: ModelConfig, args, device, dtype, compile_model: bool = False) -> dict[str, float]:
    """tokens/s and achieved FLOP/s of our model at the bench shape (optionally torch.compile'd)."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    run = torch.compile(model) if compile_model else model
    opt = _adamw(model, device)
    tokens, nb = make_batch(cfg, args.batch, args.seq, args.k, device)
    flops = step_flops(cfg, model, tokens, nb, device, dtype)
    for _ in range(args.warmup):
        train_step(run, opt, tokens, nb, device, dtype)
    times = []
    for _ in range(args.steps):
        _sync(device)
        t0 = time.perf_counter()
        train_step(run, opt, tokens, nb, device, dtype)
        _sync(device)
        times.append(time.perf_counter() - t0)
    dt = sorted(times)[len(times) // 2]  # median: robust to a neighbour's burst on a shared machine
    return {"tokens_per_s": args.batch * args.seq / dt, "flop_per_s": flops / dt, "step_s": dt,
            "params": model.num_parameters(non_embedding=False), "step_flops": flops}


def _adamw(model, device) -> torch.optim.Optimizer:
    try:  # fused AdamW exists for CPU and CUDA in recent torch; fall back to foreach
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)


def bench_peer(cfg: ModelConfig, args, bf16: bool) -> dict[str, float] | None:
    """retro-pytorch's tokens/s at the same shape, in its own interpreter; None when unavailable."""
    if not args.peer_python or not Path(args.peer_python).exists():
        print(f"peer: skipped (no retro-pytorch interpreter at {args.peer_python!r}; see --peer-python)")
        return None
    shape = {"vocab": cfg.vocab_size, "seq": args.seq, "enc_d": cfg.enc_d_model, "enc_layers": cfg.enc_n_layers,
             "d": cfg.d_model, "layers": cfg.n_layers, "heads": cfg.n_heads, "head_dim": cfg.head_dim,
             "cca": list(cfg.cca_layers), "m": cfg.chunk_size, "batch": args.batch, "k": args.k,
             "warmup": 1, "steps": args.peer_steps, "bf16": bf16}
    proc = subprocess.run([args.peer_python, "-c", PEER_SCRIPT, json.dumps(shape)], capture_output=True,
                          text=True, cwd="/tmp", timeout=1800)
    if proc.returncode != 0:
        print(f"peer: failed ({proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="retro-cpu-base", help="RETRO preset; its baseline twin is timed too")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="auto", help="auto | bf16 | fp32")
    p.add_argument("--device", default=None)
    p.add_argument("--peer-python", default=None, help="python of a venv with retro-pytorch installed")
    p.add_argument("--peer-steps", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    device = pick_device(args.device)
    dtype = autocast_dtype(device, args.dtype)
    retro_cfg = get_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq, 512))
    base_cfg = get_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq, 512), retro=False,
                          cca_layers=())
    print(f"device {device}, autocast {dtype}, threads {torch.get_num_threads()}, "
          f"shape b={args.batch} n={args.seq} k={args.k}, preset {args.preset}")
    peak = matmul_peak(device, dtype or torch.float32)
    res = {"peak_flop_per_s": peak, "baseline": bench_ours(base_cfg, args, device, dtype),
           "retro": bench_ours(retro_cfg, args, device, dtype)}
    if args.compile:
        res["baseline_compiled"] = bench_ours(base_cfg, args, device, dtype, compile_model=True)
        res["retro_compiled"] = bench_ours(retro_cfg, args, device, dtype, compile_model=True)
    peak2 = matmul_peak(device, dtype or torch.float32)  # again: the machine is shared
    res["peak_flop_per_s"] = peak = max(peak, peak2)
    if device.type == "cpu":
        res["peer_fp32"] = bench_peer(retro_cfg, args, bf16=False)
        res["peer_bf16"] = bench_peer(retro_cfg, args, bf16=True)
    report(res, peak)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


def report(res: dict, peak: float) -> None:
    print(f"matmul peak: {peak / 1e9:.0f} GFLOP/s")
    for name in ("baseline", "retro", "baseline_compiled", "retro_compiled"):
        if name not in res:
            continue
        r = res[name]
        print(f"{name:17s} {r['params'] / 1e6:6.1f}M params  {r['tokens_per_s']:8.0f} tokens/s  "
              f"{r['flop_per_s'] / 1e9:6.0f} GFLOP/s = {r['flop_per_s'] / peak:5.1%} of peak")
    print(f"RETRO FLOP/s / baseline FLOP/s: {res['retro']['flop_per_s'] / res['baseline']['flop_per_s']:.2f}")
    for key in ("peer_fp32", "peer_bf16"):
        peer = res.get(key)
        if peer:
            best = max(res[n]["tokens_per_s"] for n in ("retro", "retro_compiled") if n in res)
            print(f"retro-pytorch ({key[5:]}) {peer['params'] / 1e6:.1f}M params  {peer['tokens_per_s']:8.0f} "
                  f"tokens/s  -> ours (eager) {res['retro']['tokens_per_s'] / peer['tokens_per_s']:.1f}x, "
                  f"best {best / peer['tokens_per_s']:.1f}x")


if __name__ == "__main__":
    main()
