"""Device check (CUDA when present, else CPU at a small shape): causality and cache equality under
bf16 autocast, decoding from pre-cast weights (the same logits; tokens/s against autocast's per-call
casts), then train-step tokens/s for the baseline and RETRO. Under 3 minutes on one GPU.

    python bench/gpu_check.py [--device cuda] [--compile] [--precision bf16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from burrow.device import autocast, autocast_dtype, autocast_weights, pick_device  # noqa: E402
from burrow.model import ModelConfig, build_model  # noqa: E402
from burrow.model.loss import loss_sum  # noqa: E402
from burrow.presets import get_preset  # noqa: E402
from burrow.train.optim import fused_adamw  # noqa: E402


def small_cfg(retro: bool) -> ModelConfig:
    return get_preset("retro-tiny" if retro else "tiny", vocab_size=512, chunk_size=16, retrieved_len=32,
                      zero_init_cca_out=False)


def check_causality(device: torch.device, dtype: torch.dtype | None) -> None:
    """Perturb a token and a chunk's neighbours; earlier logits must not move (beyond bf16 noise)."""
    torch.manual_seed(0)
    cfg = small_cfg(True)
    model = build_model(cfg).to(device).eval()
    m, n = cfg.chunk_size, 100
    tokens = torch.randint(0, 512, (2, n), device=device)
    nb = torch.randint(0, 512, (2, -(-n // m), 2, cfg.retrieved_len), device=device)
    with torch.no_grad(), autocast(device, dtype):
        ref = model(tokens, neighbours=nb).float()
        t = 37
        tok2 = tokens.clone()
        tok2[:, t] = (tok2[:, t] + 1) % 512
        out = model(tok2, neighbours=nb).float()
        _verdict(f"token {t}", (out - ref)[:, :t], (out - ref)[:, t:])
        u = 2
        nb2 = nb.clone()
        nb2[:, u] = (nb2[:, u] + 1) % 512
        out = model(tokens, neighbours=nb2).float()
        first = (u + 1) * m - 1
        _verdict(f"neighbours of chunk {u}", (out - ref)[:, :first], (out - ref)[:, first:])


def _verdict(what: str, before: torch.Tensor, after: torch.Tensor) -> None:
    leak, effect = before.abs().max().item(), after.abs().max().item()
    ok = leak <= 1e-3 * max(effect, 1e-6)
    print(f"causality [{what}]: max change before = {leak:.2e}, at/after = {effect:.2e} -> {'OK' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


def check_cache(device: torch.device, dtype: torch.dtype | None) -> None:
    """Prefill + single-token steps across chunk boundaries vs one full forward."""
    for retro in (False, True):
        torch.manual_seed(0)
        cfg = small_cfg(retro)
        model = build_model(cfg).to(device).eval()
        n = 70
        tokens = torch.randint(0, 512, (2, n), device=device)
        nb = torch.randint(0, 512, (2, 5, 2, cfg.retrieved_len), device=device) if retro else None
        with torch.no_grad(), autocast(device, dtype):
            full = model(tokens, neighbours=nb).float()
            cache = model.new_cache(2, max_len=n)
            parts = [model(tokens[:, :13], neighbours=nb, cache=cache)]
            parts += [model(tokens[:, p:p + 1], neighbours=nb, cache=cache) for p in range(13, n)]
        err = (torch.cat(parts, 1).float() - full).abs().max().item() / full.std().item()
        ok = err < (5e-2 if dtype is not None else 1e-4)
        print(f"cache [{'RETRO' if retro else 'baseline'}]: max |cached - full| / std = {err:.2e} -> "
              f"{'OK' if ok else 'FAIL'}")
        if not ok:
            raise SystemExit(1)


def check_precast(preset: str, vocab: int, device: torch.device, dtype: torch.dtype | None, steps: int) -> None:
    """Greedy cached decoding of RETRO ``preset`` with neighbours: the pre-cast copy Generator decodes from
    gives autocast's logits exactly, and its tokens/s against autocast casting the fp32 weights per call."""
    if dtype is None:
        print("pre-cast decoding: no autocast on this device (fp32), nothing to check")
        return
    torch.manual_seed(0)
    cfg = get_preset(preset, vocab_size=vocab, zero_init_cca_out=False)
    model = build_model(cfg).to(device).eval()
    twin = autocast_weights(model, dtype)
    prompt = torch.randint(0, vocab, (1, cfg.chunk_size + 5), device=device)
    nb = torch.randint(0, vocab, (1, -(-(prompt.shape[1] + steps) // cfg.chunk_size), 2, cfg.retrieved_len),
                       device=device)

    def decode(m: torch.nn.Module) -> tuple[torch.Tensor, float]:
        cache = m.new_cache(1, prompt.shape[1] + steps)
        out = []
        with torch.inference_mode(), autocast(device, dtype):
            logits = m(prompt, neighbours=nb, cache=cache)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                out.append(logits[:, -1].float())
                logits = m(logits[:, -1:].argmax(-1), neighbours=nb, cache=cache)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return torch.stack(out), steps / (time.perf_counter() - t0)

    decode(model), decode(twin)  # warm-up
    (ref, per_call), (got, pre) = decode(model), decode(twin)
    ok = torch.equal(ref, got)
    print(f"pre-cast decoding [{preset}, {steps} tokens]: logits equal to autocast's: {'OK' if ok else 'FAIL'}; "
          f"{pre:,.0f} tokens/s vs {per_call:,.0f} per-call casts ({pre / per_call:.2f}x)")
    if not ok:
        raise SystemExit(1)


def time_steps(cfg: ModelConfig, device: torch.device, dtype: torch.dtype | None, batch: int, seq: int,
               steps: int, compile_model: bool) -> float:
    """Median tokens/s of forward + backward + AdamW, through the training loop's own fused loss and
    optimizer (burrow.model.loss.loss_sum, burrow.train.optim.fused_adamw)."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    run = torch.compile(model) if compile_model else model
    opt = fused_adamw(model.parameters(), lr=1e-4, weight_decay=0.1)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    nb = None
    if cfg.retro:
        nb = torch.randint(0, cfg.vocab_size, (batch, seq // cfg.chunk_size, 2, cfg.retrieved_len), device=device)
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = loss_sum(run, tokens[:, :-1], tokens[:, 1:], neighbours=nb)
        (loss / tokens[:, 1:].numel()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # two warm-up steps (kernel selection, compilation)
            times.append(time.perf_counter() - t0)
    return batch * seq / sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--precision", default="auto", help="autocast: auto | bf16 | fp16 | fp32")
    args = p.parse_args()
    device = pick_device(args.device)
    dtype = autocast_dtype(device, args.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), autocast {dtype}")
    check_causality(device, dtype)
    check_cache(device, dtype)
    if device.type == "cuda":  # RETRO 172M's decoder, the paper's chunking, 32k vocabulary
        preset, vocab, batch, seq, steps = "retro-172m", 32000, 8, 2048, 5
    else:
        preset, vocab, batch, seq, steps = "retro-tiny", 2048, 2, 256, 2
    check_precast(preset, vocab, device, dtype, 128 if device.type == "cuda" else 48)
    retro_cfg = get_preset(preset, vocab_size=vocab, max_seq_len=seq)
    base_cfg = get_preset(preset, vocab_size=vocab, max_seq_len=seq, retro=False, cca_layers=())
    for compile_model in (False, True) if args.compile else (False,):
        tag = "compiled" if compile_model else "eager"
        base = time_steps(base_cfg, device, dtype, batch, seq, steps, compile_model)
        retro = time_steps(retro_cfg, device, dtype, batch, seq, steps, compile_model)
        print(f"train step {preset} b={batch} n={seq} k=2 ({tag}): baseline {base:,.0f} tokens/s, "
              f"RETRO {retro:,.0f} tokens/s")


if __name__ == "__main__":
    main()
