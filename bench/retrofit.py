"""The RETRO-fitting table on WikiText-2 valid: a base, its RETRO-fit, and RETRO trained from scratch.

    python bench/retrofit.py [--max-docs 3] [--base-steps 60] [--fit-steps 20] [--smollm2] [--out bench-out/retrofit]

For the burrow baseline (``--preset``, default ``tiny``): the memory is a slice of WikiText-2 train
from ../shared/data (``--train-lines``); the baseline trains for ``--base-steps``; its RETRO-fit
adds the CCA layers and encoder of the preset's RETRO twin (identical architecture) and trains only
those for ``--fit-steps``; RETRO from scratch trains the twin for base + fit steps, i.e. the same
number of optimizer steps and tokens (its steps cost a little more: the whole model is trained).
With ``--smollm2``: SmolLM2-135M-Instruct and its RETRO-fit on a memory of the same slice built
with SmolLM2's tokenizer. A from-scratch RETRO of SmolLM2's size for the same compute (its 2T-token
pre-training) is out of reach here and reported as not run. Every model is scored in bits per byte
on the first ``--max-docs`` documents of WikiText-2 valid; RETRO models [OFF] and [ON].

This runs small numbers of steps on a CPU: the numbers show the mechanics (the fit equals the base
with retrieval off and moves with it on), not the paper's converged gains. Prints a Markdown table
and writes OUT/retrofit.json.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from burrow.artefacts import write_json  # noqa: E402
from burrow.data.shared import WIKITEXT_TRAIN, WIKITEXT_VALID, find_data  # noqa: E402
from burrow.data.tokenizer import TokenizerConfig  # noqa: E402
from burrow.evaluate import EvalConfig, evaluate, model_entries  # noqa: E402
from burrow.memory import Memory  # noqa: E402
from burrow.memory.build import MemoryConfig, build_memory, compute_neighbours  # noqa: E402
from burrow.presets import get_preset  # noqa: E402
from burrow.train import TrainConfig, load_run, train  # noqa: E402
from burrow.train.retrofit import RetrofitConfig, retrofit  # noqa: E402

log = logging.getLogger("bench.retrofit")
NOTE = "CPU-sized run: few steps on a WikiText-2 slice; shows the mechanics, not converged paper gains."


def _slice(data: Path, out: Path, n_lines: int) -> Path:
    """The first ``n_lines`` lines of WikiText-2 train (whole articles up to there), gzipped."""
    dest = out / f"wikitext-train-{n_lines}.tokens.gz"
    if not dest.exists():
        out.mkdir(parents=True, exist_ok=True)
        with gzip.open(data / WIKITEXT_TRAIN, "rt", encoding="utf-8") as f:
            lines = [line for _, line in zip(range(n_lines), f, strict=False)]
        with gzip.open(dest, "wt", encoding="utf-8") as g:
            g.writelines(lines)
    return dest


def _memory(corpus: Path, out: Path, tokenizer: TokenizerConfig) -> Memory:
    memory, _ = build_memory([str(corpus)], out, MemoryConfig(tokenizer=tokenizer), progress=False)
    compute_neighbours(memory, k=2, progress=False)
    return memory


def _train_cfg(args: argparse.Namespace, model: str, memory: Memory, out: Path, steps: int) -> TrainConfig:
    return TrainConfig(model=model, out=out, memory=memory.dir, steps=steps, batch_size=args.batch_size,
                       seq_len=args.seq_len, lr=args.lr, eval_every=0, device=args.device, progress=False)


def _fit_cfg(args: argparse.Namespace, steps: int, **kw: Any) -> RetrofitConfig:
    base: dict[str, Any] = dict(steps=steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.fit_lr,
                                eval_every=0, device=args.device, progress=False)
    base.update(kw)
    return RetrofitConfig(**base)


def burrow_group(args: argparse.Namespace, corpus: Path, valid: Path) -> list[dict[str, Any]]:
    """Base, RETRO-fit and from-scratch RETRO of a burrow preset, scored on WikiText-2 valid."""
    memory = _memory(corpus, args.out / "memory", TokenizerConfig(vocab_size=2048))
    runs, t = args.out / "runs", {}
    t0 = time.perf_counter()
    train(_train_cfg(args, args.preset, memory, runs / "base", args.base_steps))
    t["base"] = time.perf_counter() - t0
    twin = get_preset(f"retro-{args.preset}")
    t0 = time.perf_counter()
    fit = retrofit(runs / "base", memory.dir, runs / "fit", _fit_cfg(args, args.fit_steps, cca_layers=twin.cca_layers))
    t["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train(_train_cfg(args, twin.name, memory, runs / "scratch", args.base_steps + args.fit_steps))
    t["scratch"] = time.perf_counter() - t0
    models = {f"{args.preset} base": (load_run(runs / "base"), "baseline"),
              **model_entries(f"{args.preset} RETRO-fit", load_run(runs / "fit")),
              **model_entries(f"{args.preset} RETRO scratch", load_run(runs / "scratch"))}
    result = evaluate(models, memory, [str(valid)], _eval_cfg(args), cache_dir=args.out / "eval")
    steps = {"base": args.base_steps, "fit": args.fit_steps, "scratch": args.base_steps + args.fit_steps}
    share = f"{100 * fit.trainable_share:.1f}% trained"
    extra = {"base": "", "fit": f"+{args.fit_steps} fit steps, {share}", "scratch": "same steps as base + fit"}
    return [_row(args.preset, name, score, steps, extra, t) for name, score in result.scores.items()]


def smollm2_group(args: argparse.Namespace, corpus: Path, valid: Path) -> list[dict[str, Any]]:
    """SmolLM2-135M-Instruct and its RETRO-fit on a memory with SmolLM2's tokenizer."""
    from burrow.data.layout import start_token
    from burrow.model.hf import HFBaseline, load_hf_causal_lm, resolve_hf_base

    path, gguf = resolve_hf_base("smollm2")
    memory = _memory(corpus, args.out / "memory-smollm2", TokenizerConfig(source=path, gguf_file=gguf))
    t0 = time.perf_counter()
    fit = retrofit("smollm2", memory.dir, args.out / "runs" / "smollm2-fit",
                   _fit_cfg(args, args.smol_fit_steps, batch_size=args.smol_batch_size, seq_len=args.smol_seq_len))
    t = {"fit": time.perf_counter() - t0, "base": 0.0}
    base = HFBaseline(load_hf_causal_lm("smollm2"), "smollm2", pad_id=memory.store.pad_id,
                      start_id=start_token(memory.tokenizer))  # reads the layout's pads as the fit's base does
    models = {"SmolLM2-135M base": (base, "baseline"),
              **model_entries("SmolLM2-135M RETRO-fit", load_run(args.out / "runs" / "smollm2-fit"))}
    result = evaluate(models, memory, [str(valid)], _eval_cfg(args), cache_dir=args.out / "eval-smollm2")
    steps = {"base": 0, "fit": args.smol_fit_steps}
    extra = {"base": "pretrained (2T tokens)", "fit": f"{100 * fit.trainable_share:.1f}% trained"}
    rows = [_row("smollm2", name, score, steps, extra, t) for name, score in result.scores.items()]
    rows.append({"group": "smollm2", "model": "SmolLM2-135M RETRO scratch", "mode": "-", "bpb": None,
                 "steps": None, "seconds": None, "note": "not run: needs SmolLM2's pre-training compute"})
    return rows


def _eval_cfg(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(k=2, max_docs=args.max_docs, seq_len=args.eval_seq_len, device=args.device,
                      bootstrap_samples=200)


def _row(group: str, name: str, score: Any, steps: dict[str, int], extra: dict[str, str],
         seconds: dict[str, float]) -> dict[str, Any]:
    kind = "fit" if "RETRO-fit" in name else "scratch" if "scratch" in name else "base"
    return {"group": group, "model": name.split(" [")[0], "mode": score.mode, "bpb": score.bpb,
            "steps": steps.get(kind), "seconds": round(seconds.get(kind, 0.0), 1), "note": extra.get(kind, "")}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The closing table."""
    lines = ["| model | mode | bpb (WikiText-2 valid) | steps | train s | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        bpb = f"{r['bpb']:.4f}" if r["bpb"] is not None else "n/a"
        lines.append(f"| {r['model']} | {r['mode']} | {bpb} | {r['steps'] if r['steps'] is not None else '-'} | "
                     f"{r['seconds'] if r['seconds'] is not None else '-'} | {r['note']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="Folder laid out like shared/data (default: found).")
    p.add_argument("--out", type=Path, default=Path("bench-out/retrofit"))
    p.add_argument("--preset", default="tiny", help="burrow baseline preset with a retro- twin.")
    p.add_argument("--train-lines", type=int, default=3000, help="WikiText-2 train lines in the memory.")
    p.add_argument("--max-docs", type=int, default=3, help="WikiText-2 valid documents scored.")
    p.add_argument("--base-steps", type=int, default=60)
    p.add_argument("--fit-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--fit-lr", type=float, default=2e-3)
    p.add_argument("--eval-seq-len", type=int, default=256)
    p.add_argument("--smollm2", action="store_true", help="Also RETRO-fit SmolLM2-135M-Instruct.")
    p.add_argument("--smol-fit-steps", type=int, default=6)
    p.add_argument("--smol-batch-size", type=int, default=2)
    p.add_argument("--smol-seq-len", type=int, default=128)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = find_data(args.data, needs=(WIKITEXT_TRAIN, WIKITEXT_VALID))
    corpus = _slice(data, args.out, args.train_lines)
    rows = burrow_group(args, corpus, data / WIKITEXT_VALID)
    if args.smollm2:
        rows += smollm2_group(args, corpus, data / WIKITEXT_VALID)
    table = markdown(rows)
    write_json(args.out / "retrofit.json", {"rows": rows, "args": {k: str(v) for k, v in vars(args).items()},
                                            "note": NOTE, "markdown": table})
    log.info("%s\n\n%s\n%s", NOTE, table, f"written: {args.out / 'retrofit.json'}")


if __name__ == "__main__":
    main()
