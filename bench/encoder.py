"""Frozen-encoder throughput: the FLOP/s MiniLM achieves against this machine's matmul peak.

    python bench/encoder.py [--texts 2048] [--words 48] [--rounds 3] [--json OUT.json]

Texts: WikiText-2 train (``../shared/data``, via find_data) cut into pieces of ``--words`` words (~ the
memory's 64-token chunks). In one process, round after round in a rotating order (the machine may be
shared: each figure is its fastest round), it times: a 2048^3 matmul in the encoder's dtype (the peak);
burrow's ``FrozenEncoder.encode`` (its plain-torch BERT path, burrow.memory.bert, texts batched by token
count); the same encode through sentence-transformers (what that path replaced; the ratio shows it
costs nothing); and the same batches through the bare Hugging Face model (no tokenizing, no pooling:
the ceiling of the encode path). FLOPs are counted by torch's FlopCounterMode over one
encode (the padded tokens included: what the machine executes); the padding share is reported apart.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from burrow.data.shared import WIKITEXT_TRAIN, find_data  # noqa: E402
from burrow.device import autocast  # noqa: E402
from burrow.memory.encode import EncoderConfig, FrozenEncoder  # noqa: E402
from flops import counter as flop_counter  # noqa: E402


def wiki_pieces(n: int, words: int) -> list[str]:
    """The first ``n`` pieces of ``words`` words of WikiText-2 train (headings and blank lines skipped)."""
    path = find_data(None, needs=(WIKITEXT_TRAIN,)) / WIKITEXT_TRAIN
    out: list[str] = []
    buf: list[str] = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get("text", "") if line.startswith("{") else line
            if not text.strip() or text.strip().startswith("="):
                continue
            buf += text.split()
            while len(buf) >= words and len(out) < n:
                out.append(" ".join(buf[:words]))
                buf = buf[words:]
            if len(out) >= n:
                return out
    return out


def sentence_transformers_encoder(config: EncoderConfig) -> FrozenEncoder:
    """A ``FrozenEncoder`` that encodes through sentence-transformers even where the plain path applies."""
    encoder = FrozenEncoder(config)
    encoder.plain, encoder.model = None, encoder._load_sentence_transformer()
    return encoder


def batches(encoder: FrozenEncoder, texts: list[str], by_tokens: bool = True) -> list[dict[str, torch.Tensor]]:
    """The tokenized batches ``FrozenEncoder.encode`` makes (sorted by token count, padded per batch), or
    with ``by_tokens`` false those of a plain sentence-transformers encode (sorted by characters);
    ``encoder`` runs sentence-transformers."""
    st = encoder.model
    order = encoder.length_order(texts) if by_tokens else np.argsort([-st._input_length(t) for t in texts])
    size = encoder.config.batch_size
    return [{k: v.to(encoder.device) for k, v in st.preprocess([texts[i] for i in order[s:s + size]]).items()
             if isinstance(v, torch.Tensor)}
            for s in range(0, len(texts), size)]


def padding_share(feats: list[dict[str, torch.Tensor]]) -> float:
    """Share of the token slots the batches compute that are padding."""
    real = sum(int(f["attention_mask"].sum()) for f in feats)
    slots = sum(f["attention_mask"].numel() for f in feats)
    return 1 - real / slots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=2048)
    ap.add_argument("--words", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    texts = wiki_pieces(args.texts, args.words)
    encoder = FrozenEncoder(EncoderConfig(precision=args.precision))
    st = sentence_transformers_encoder(EncoderConfig(precision=args.precision))
    dtype = encoder.dtype or torch.float32
    print(f"encoder {encoder.config.model} on {encoder.device}, autocast {encoder.dtype}, batch "
          f"{encoder.config.batch_size}, {len(texts)} texts of {args.words} words, threads {torch.get_num_threads()}")
    feats = batches(st, texts)
    bert = st.model[0].auto_model
    tokens = sum(int(f["attention_mask"].sum()) for f in feats)

    @torch.inference_mode()
    def bare() -> None:
        with autocast(encoder.device, encoder.dtype):
            for f in feats:
                bert(input_ids=f["input_ids"], attention_mask=f["attention_mask"])

    a = torch.randn(2048, 2048, dtype=dtype, device=encoder.device)
    b = torch.randn(2048, 2048, dtype=dtype, device=encoder.device)
    steps: dict[str, Callable[[], object]] = {"matmul": lambda: a @ b, "encode": lambda: encoder.encode(texts),
                                              "sentence-transformers": lambda: st.encode(texts), "bare model": bare}
    def sync() -> None:
        if encoder.device.type == "cuda":
            torch.cuda.synchronize(encoder.device)

    with flop_counter() as counter:  # attention included (bench/flops.py)
        encoder.encode(texts)
    flops = counter.get_total_flops()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        names = list(steps)
        for name in names[r % len(names):] + names[:r % len(names)]:
            for _ in range(3 if name == "matmul" else 1):
                sync()
                t0 = time.perf_counter()
                steps[name]()
                sync()  # on CUDA a call returns at launch: time the work, not the launch
                times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {min(v):.2f}s" for k, v in times.items()), flush=True)
    peak = 2 * 2048**3 / min(times["matmul"])
    res = {"texts": len(texts), "tokens": tokens, "tokens_per_text": tokens / len(texts),
           "padding_share": padding_share(feats), "padding_share_sorted_by_characters":
           padding_share(batches(st, texts, by_tokens=False)), "encode_flops": flops, "peak_flop_per_s": peak}
    for name in ("encode", "sentence-transformers", "bare model"):
        t = min(times[name])
        res[name] = {"seconds": t, "texts_per_s": len(texts) / t, "flop_per_s": flops / t,
                     "fraction_of_peak": flops / t / peak}
    print(f"matmul peak {peak / 1e9:.0f} GFLOP/s; {res['tokens_per_text']:.1f} tokens per text, padding "
          f"{res['padding_share']:.1%} of the computed tokens (sorted by characters, as sentence-transformers "
          f"does: {res['padding_share_sorted_by_characters']:.1%})")
    for name in ("encode", "sentence-transformers", "bare model"):
        r = res[name]
        print(f"{name:21s} {r['texts_per_s']:7.0f} texts/s  {r['flop_per_s'] / 1e9:5.0f} GFLOP/s = "
              f"{r['fraction_of_peak']:.1%} of peak")
    print(f"encode / bare model: {res['bare model']['seconds'] / res['encode']['seconds']:.2f}; plain path / "
          f"sentence-transformers: {res['sentence-transformers']['seconds'] / res['encode']['seconds']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
