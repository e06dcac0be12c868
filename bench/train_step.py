"""Train-step throughput: burrow's baseline and RETRO vs lucidrains' retro-pytorch at the same shape.

    python bench/train_step.py [--preset retro-cpu-base] [--peer-path /tmp/retro-peer] [--compile]

On a GPU (issue 14's check: RETRO-172M at n 2048, FLOP/s against the bf16 matmul peak measured in the
same run, and whether every attention call gets a fused kernel):

    python bench/train_step.py --device cuda --preset retro-172m --seq 2048 --batch 8 --vocab 32000 --compile

Measures, in one process on one machine: tokens/s of forward + backward + AdamW for burrow's
baseline and RETRO (sequence 512, batch 4, k = 2 by default) through the training loop's own loss
(``burrow.model.loss.loss_sum``) and optimizer (``burrow.train.optim``), the FLOP/s they achieve
(FLOPs counted by torch's FlopCounterMode over one step, with the fused attention kernels and the
fused loss's in-place addmm_ that it misses added (bench/flops.py), so the encoder's 4x tokens and CCA
count; causal self-attention is counted at half of its full n x n cost), this machine's matmul peak (a
2048^3 matmul in the autocast dtype), and retro-pytorch at the same shape in its best mode here (the
same heads in its encoder and decoder, and cross-attention in the same encoder layers).

The machine may be shared and noisy, so every contender (the peak matmul too) runs one step per
round, round after round, in a rotating order; each one's figure is its *fastest* step (noise only
ever adds time), and the ratios compare figures from the same rounds.

The peer is never vendored: ``--peer-path DIR`` names a directory holding a ``retro_pytorch``
package (``retro_pytorch/retro_pytorch.py`` from a checkout of github.com/lucidrains/RETRO-pytorch,
an empty ``__init__.py`` and a ``retrieval.py`` defining ``BERT_VOCAB_SIZE = 28996``, which skips its
faiss/autofaiss imports); it needs einops. Its best mode is bf16 autocast on a device with fast bf16
(both fp32 and bf16 are timed there), fp32 elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from burrow.device import autocast, autocast_dtype, cpu_has_bf16, pick_device  # noqa: E402
from burrow.model import ModelConfig, build_model  # noqa: E402
from burrow.model.loss import loss_sum  # noqa: E402
from burrow.presets import get_preset  # noqa: E402
from burrow.train.optim import fused_adamw  # noqa: E402
from flops import counter as flop_counter  # noqa: E402

Step = Callable[[], None]


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


def forward_backward(model, tokens, nb, device, dtype) -> None:
    """Forward and backward of the summed next-token loss, as the training loop computes it."""
    with autocast(device, dtype):
        loss = loss_sum(model, tokens[:, :-1], tokens[:, 1:], neighbours=nb)
    (loss / tokens[:, 1:].numel()).backward()


def step_flops(cfg: ModelConfig, model, tokens, nb, device, dtype) -> float:
    """FLOPs of one fwd+bwd, causal self-attention counted at half its full-square cost (the counter
    counts every attention at its full square, forward and 2x backward)."""
    with flop_counter() as counter:
        forward_backward(model, tokens, nb, device, dtype)
    model.zero_grad(set_to_none=True)
    b, n = tokens.shape[0], tokens.shape[1] - 1
    causal_full = 3 * 4 * b * n * n * cfg.n_heads * cfg.head_dim * cfg.n_layers  # fwd + 2x bwd
    return counter.get_total_flops() - causal_full / 2


def ours(cfg: ModelConfig, args, device, dtype, compile_model: bool = False) -> tuple[Step, dict]:
    """A step function for burrow's model and its info (params, FLOPs per step, compile seconds)."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    opt = fused_adamw(model.parameters(), lr=1e-4, weight_decay=0.1)
    tokens, nb = make_batch(cfg, args.batch, args.seq, args.k, device)
    info = {"params": model.num_parameters(non_embedding=False),
            "step_flops": step_flops(cfg, model, tokens, nb, device, dtype)}
    run = torch.compile(model) if compile_model else model

    def step() -> None:
        forward_backward(run, tokens, nb, device, dtype)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()  # warm-up (and, compiled, the compilation: cached on disk by inductor for the next run)
    _sync(device)
    info["first_step_s"] = time.perf_counter() - t0
    return step, info


def peer(cfg: ModelConfig, args, device, bf16: bool) -> tuple[Step, dict]:
    """A step function for retro-pytorch's RETRO at the same shape (imported from --peer-path)."""
    sys.path.insert(0, str(Path(args.peer_path).resolve()))
    import functools

    from retro_pytorch import retro_pytorch as rp

    if cfg.enc_head_dim != cfg.head_dim:
        raise SystemExit("retro-pytorch has one dim_head for its encoder and decoder; this preset has two")
    # RETRO(heads=…) is not passed on to its Encoder and Decoder (both keep 8 heads): give each our count
    encoder, decoder = rp.Encoder, rp.Decoder
    rp.Encoder = functools.partial(encoder, heads=cfg.enc_n_heads)
    rp.Decoder = functools.partial(decoder, heads=cfg.n_heads)
    torch.manual_seed(0)
    try:
        model = rp.RETRO(num_tokens=cfg.vocab_size, max_seq_len=args.seq, enc_dim=cfg.enc_d_model,
                         enc_depth=cfg.enc_n_layers, enc_cross_attn_layers=tuple(cfg.enc_cross_layers),
                         dec_dim=cfg.d_model, dec_depth=cfg.n_layers, dim_head=cfg.head_dim,
                         dec_cross_attn_layers=tuple(cfg.cca_layers), chunk_size=cfg.chunk_size).to(device)
    finally:
        rp.Encoder, rp.Decoder = encoder, decoder
    opt = fused_adamw(model.parameters(), lr=1e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(1, cfg.vocab_size, (args.batch, args.seq + 1), generator=g).to(device)
    ret = torch.randint(1, cfg.vocab_size, (args.batch, args.seq // cfg.chunk_size, args.k, cfg.retrieved_len),
                        generator=g).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(seq, ret, return_loss=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with flop_counter() as counter:  # its attention computes the full n x n: all counted
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(seq, ret, return_loss=True)
        loss.backward()
    opt.zero_grad(set_to_none=True)
    return step, {"params": sum(p.numel() for p in model.parameters()), "step_flops": counter.get_total_flops()}


def matmul(device: torch.device, dtype: torch.dtype, size: int = 2048) -> tuple[Step, dict]:
    """A square matmul in ``dtype``: the machine's practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return (lambda: a @ b), {"flops": 2 * size**3, "size": size, "dtype": str(dtype)}


def rounds(contenders: dict[str, Step], n_rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each contender's steps, one step each per round, the order rotating every round."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(n_rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            reps = 3 if name == "matmul" else 1  # the peak is a short burst: take a few per round
            for _ in range(reps):
                _sync(device)
                t0 = time.perf_counter()
                contenders[name]()
                _sync(device)
                times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{n_rounds}: " + ", ".join(f"{n} {min(t):.2f}s" for n, t in times.items()), flush=True)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="retro-cpu-base", help="RETRO preset; its baseline twin is timed too")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dtype", default="auto", help="auto | bf16 | fp32")
    p.add_argument("--device", default=None)
    p.add_argument("--peer-path", default=None, help="directory holding a retro_pytorch package (see above)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--no-eager", action="store_true", help="time only the compiled models (with --compile)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    device = pick_device(args.device)
    dtype = autocast_dtype(device, args.dtype)
    retro_cfg = get_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq, 512))
    base_cfg = get_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq, 512), retro=False,
                          cca_layers=())
    print(f"device {device}, autocast {dtype}, threads {torch.get_num_threads()}, "
          f"shape b={args.batch} n={args.seq} k={args.k}, preset {args.preset}", flush=True)
    steps: dict[str, Step] = {}
    info: dict[str, dict] = {}
    # on a GPU a 2048^3 matmul takes ~20 µs, as short as the synchronisation around it: time a larger one
    steps["matmul"], info["matmul"] = matmul(device, dtype or torch.float32, 8192 if device.type == "cuda" else 2048)
    variants = ([] if args.no_eager else [False]) + ([True] if args.compile else [])
    for compiled in variants:
        for name, cfg in (("baseline", base_cfg), ("retro", retro_cfg)):
            key = f"{name}_compiled" if compiled else name
            steps[key], info[key] = ours(cfg, args, device, dtype, compiled)
            print(f"{key}: first step {info[key]['first_step_s']:.1f}s", flush=True)
            if not compiled:
                info[key]["fused_attention"] = fused_attention(steps[key])
                print(f"{key}: every attention call has a fused kernel: {info[key]['fused_attention']}", flush=True)
    if args.peer_path:
        fast_bf16 = device.type == "cuda" or cpu_has_bf16()
        for bf16 in ([False, True] if fast_bf16 else [False]):
            key = "peer_bf16" if bf16 else "peer_fp32"
            steps[key], info[key] = peer(retro_cfg, args, device, bf16)
        if not fast_bf16:
            print("peer bf16: not timed (no fast bf16 on this device: fp32 is the peer's best mode here)")
    times = rounds(steps, args.rounds, device)
    res = summarize(times, info, args)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


def fused_attention(step: Step) -> str:
    """Run one step with SDPA's unfused math backend forbidden: "yes" when every attention call (causal
    self-attention, the encoder's masked self-attention, CCA and the encoder's cross-attention) found a
    fused kernel (flash, memory-efficient or cuDNN on CUDA; the flash kernel on CPU), else the error."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    try:
        with sdpa_kernel(fused):
            step()
    except RuntimeError as e:
        return "no: " + str(e).splitlines()[0][:200]
    return "yes"


def summarize(times: dict[str, list[float]], info: dict[str, dict], args) -> dict:
    """Per contender: fastest and median step, tokens/s, FLOP/s and fraction of the peak."""
    res: dict = {"shape": {"batch": args.batch, "seq": args.seq, "k": args.k, "preset": args.preset,
                           "vocab": args.vocab},
                 "threads": torch.get_num_threads(), "device": args.device or "auto", "dtype": args.dtype,
                 "compile": args.compile, "rounds": args.rounds, "peak_matmul": info["matmul"],
                 "torch": torch.__version__}
    peak = info["matmul"]["flops"] / min(times["matmul"])
    res["peak_flop_per_s"] = peak
    for name, t in times.items():
        if name == "matmul":
            continue
        best, median = min(t), sorted(t)[len(t) // 2]
        r = {**info[name], "step_s": best, "median_step_s": median, "tokens_per_s": args.batch * args.seq / best}
        if "step_flops" in r:
            r["flop_per_s"] = r["step_flops"] / best
            r["fraction_of_peak"] = r["flop_per_s"] / peak
        res[name] = r
    return res


def report(res: dict) -> None:
    peak = res["peak_flop_per_s"]
    print(f"matmul peak: {peak / 1e9:.0f} GFLOP/s")
    for name in ("baseline", "retro", "baseline_compiled", "retro_compiled", "peer_fp32", "peer_bf16"):
        if name not in res:
            continue
        r = res[name]
        line = f"{name:17s} {r['params'] / 1e6:6.1f}M params  {r['tokens_per_s']:8.0f} tokens/s"
        if "flop_per_s" in r:
            line += f"  {r['flop_per_s'] / 1e9:6.0f} GFLOP/s = {r['fraction_of_peak']:5.1%} of peak"
        if name.endswith("compiled"):
            line += f"  (first step incl. compile {r['first_step_s']:.0f}s)"
        print(line)
    peers = [res[n]["tokens_per_s"] for n in ("peer_fp32", "peer_bf16") if n in res]
    if peers:
        best_peer = max(peers)
        for name in ("retro", "retro_compiled"):
            if name in res:
                print(f"{name} / retro-pytorch's best mode: {res[name]['tokens_per_s'] / best_peer:.2f}x")


if __name__ == "__main__":
    main()
