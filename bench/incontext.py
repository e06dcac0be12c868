"""In-context retrieval with a frozen pretrained LM: no retrieval vs BM25 vs dense, on the same documents.

    .venv/bin/python bench/incontext.py --memory runs/demo/memory [--lm smollm2] [--docs 20] [--split test]
        [--stride 64] [--max-context 512] [--json runs/demo/incontext.json]

Scores the first ``--docs`` WikiText-2 articles of ``--split`` with the LM alone (the same strided
windows, no passage) and with the top passage of each retriever before its window, and prints bpb
and the paired gain with a 95% bootstrap interval over documents (`burrow eval --method incontext`'s
machinery). Nothing is tuned, so reporting on test is allowed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from burrow.data.shared import WIKITEXT_TEST, WIKITEXT_VALID, find_data
from burrow.evaluate import load_eval_data
from burrow.evaluate.bpb import bootstrap_gain
from burrow.evaluate.incontext import InContextConfig, score_incontext
from burrow.lm import load_hf_lm
from burrow.memory import Memory
from burrow.memory.bm25 import build_bm25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", type=Path, default=Path("runs/demo/memory"))
    ap.add_argument("--lm", default="smollm2")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--split", choices=("valid", "test"), default="test")
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--max-context", type=int, default=512)
    ap.add_argument("--retrievers", default="bm25,dense")
    ap.add_argument("--json", type=Path, default=Path("runs/demo/incontext.json"))
    args = ap.parse_args()
    memory = Memory(args.memory)
    build_bm25(memory)
    data_dir = find_data(args.data, needs=(WIKITEXT_TEST, WIKITEXT_VALID))
    split = WIKITEXT_TEST if args.split == "test" else WIKITEXT_VALID
    data = load_eval_data([str(data_dir / split)], memory.tokenizer, memory.chunk_size, max_docs=args.docs)
    lm = load_hf_lm(args.lm)
    out: dict = {"lm": args.lm, "split": args.split, "documents": data.n_docs, "tokens": data.n_tokens,
                 "bytes": data.n_bytes, "stride": args.stride, "max_context": args.max_context, "runs": {}}
    t0 = time.perf_counter()
    base = score_incontext(f"{args.lm} (no retrieval)", lm, data, None,
                           InContextConfig(stride=args.stride, max_context=args.max_context))
    out["runs"]["none"] = {"bpb": base.bpb, "seconds": time.perf_counter() - t0}
    print(f"{'none':<8} {base.bpb:.4f} bpb  ({out['runs']['none']['seconds']:.0f} s)", flush=True)
    for retriever in args.retrievers.split(","):
        t0 = time.perf_counter()
        cfg = InContextConfig(stride=args.stride, max_context=args.max_context, retriever=retriever)
        score = score_incontext(f"{args.lm} +{retriever}", lm, data, memory, cfg)
        g = bootstrap_gain(data, score, base)
        out["runs"][retriever] = {"bpb": score.bpb, "gain": g.to_dict(), "seconds": time.perf_counter() - t0,
                                  "query_tokens": cfg.query_len}
        print(f"{retriever:<8} {score.bpb:.4f} bpb  gain {g.gain:+.4f} [{g.low:+.4f}, {g.high:+.4f}] "
              f"({100 * g.relative:+.1f}%)  ({out['runs'][retriever]['seconds']:.0f} s)", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
