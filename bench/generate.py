"""Benchmark generation and serving.

1. Generation tokens/s of a RETRO model with retrieval (RETRO[ON]: a memory search every m tokens,
   neighbours through the encoder, CCA) against the same model with retrieval off; the ratio's
   target is ≥ 0.9 (issue 14).
2. Server latency: `burrow serve` in a subprocess on loopback, 8 concurrent clients (httpx
   AsyncClient) sending non-streaming /v1/generate requests back to back for 60 s; p50 / p99 request
   latency, throughput, and the error count (target: zero).

With ``--run RUN --memory DIR`` it uses a trained model and its memory. Without them it builds a
small memory from the first WikiText-2 training articles (``../shared/data``, via find_data) and an
untrained ``retro-cpu-small`` — it says so; speed does not depend on the weights being trained.

    .venv/bin/python bench/generate.py [--run RUN --memory DIR] [--duration 60] [--json OUT.json]

   ``--sizes retro-tiny,retro-cpu-small,retro-cpu-base [--memory DIR]`` measures only the ON/OFF ratio,
   for untrained models of each size: a memory search and the encoder's pass cost the same per chunk
   whatever the decoder, so the ratio rises with the model's size.

   ``--precast [--precision bf16]`` measures what pre-cast weights buy decoding under autocast: the
   generator decodes from a copy whose linear weights are stored in the autocast dtype (the same
   logits); the control is the same generator reading the fp32 model, whose weights autocast casts on
   every call. Tokens/s with retrieval on and off, interleaved, best of 3 rounds.

3. With ``--lm smollm2 [--memory DIR]``: a pretrained LM reading the memory in context
   (burrow.generate.incontext) instead — tokens/s with and without retrieval (target ≥ 10 tokens/s
   on CPU), and a factuality proxy: on ``--prompts`` (≥ 20) held-out Wikipedia leads
   (wikipedia-vital-summaries titles that are not memory documents; the first words of the lead are
   the prompt), the share of generated word 8-grams found in the passages retrieval reads for that
   text (the same queries, every s tokens), with and without retrieval. Without ``--memory`` it builds
   the small WikiText-2 memory (and its BM25 index).

    .venv/bin/python bench/generate.py --lm smollm2 --memory runs/demo/memory [--prompts 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from burrow.data.corpus import read_corpus
from burrow.data.shared import WIKITEXT_TRAIN, find_data
from burrow.generate import GenerationConfig, Generator, load_generation_model
from burrow.memory import Memory
from burrow.memory.build import MemoryConfig, build_memory
from burrow.model import build_model, save_model
from burrow.presets import get_preset

PROMPT = "The history of the city begins in the early middle ages, when"


def _wiki_memory(work: Path, articles: int) -> Memory:
    """A memory of the first ``articles`` WikiText-2 training articles (built in ``work``, reused)."""
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    docs = []
    for doc in read_corpus([str(find_data() / WIKITEXT_TRAIN)]):
        docs.append(doc.text)
        if len(docs) >= articles:
            break
    (corpus / "wiki.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    memory, _ = build_memory([str(corpus)], work / "mem", MemoryConfig(), progress=False)
    return memory


def small_setup(work: Path, articles: int) -> tuple[Path, Path]:
    """A memory of the first ``articles`` WikiText-2 training articles and an untrained retro-cpu-small."""
    memory = _wiki_memory(work, articles)
    torch.manual_seed(0)
    model = build_model(get_preset("retro-cpu-small", vocab_size=memory.tokenizer.vocab_size,
                                   zero_init_cca_out=False))
    print(f"  (no --run/--memory: untrained retro-cpu-small on a memory of {articles} WikiText-2 articles, "
          f"{len(memory):,} chunks)")
    return save_model(model, work / "model"), memory.dir


def tokens_per_second(gen: Generator, retrieval: bool, tokens: int, repeats: int) -> tuple[float, float]:
    """Median tokens/s over ``repeats`` sampled generations of ``tokens`` tokens (fixed seeds), and the
    median share of their time spent searching the memory."""
    rates, search = [], []
    for seed in range(repeats):
        res = gen.generate(PROMPT, GenerationConfig(max_new_tokens=tokens, top_p=0.9, seed=seed, retrieval=retrieval))
        if len(res.tokens) != tokens:  # ON and OFF must time the same work: never a run cut short
            raise SystemExit(f"a generation stopped after {len(res.tokens)} of {tokens} tokens ({res.finish_reason})")
        rates.append(res.tokens_per_second)
        search.append(res.search_seconds / res.seconds if res.seconds else 0.0)
    return float(statistics.median(rates)), float(statistics.median(search))


def tokens_that_fit(gen: Generator, tokens: int) -> int:
    """``tokens``, or fewer: what fits in the model's context after the document start and the prompt."""
    p0 = int(gen.config.chunk_size) + len(gen.tokenizer.encode(PROMPT))
    return min(tokens, int(gen.config.max_seq_len) - p0)


def bench_generation(model_dir: Path | Any, memory_dir: Path, tokens: int, repeats: int, device: str,
                     label: str = "", precision: str = "auto", rounds: int = 5) -> dict[str, Any]:
    """Tokens/s with retrieval on and off in ``rounds`` rounds, each an ON and an OFF measurement back to
    back (their order alternating), so both see the same machine load.

    Tokens/s are the best round of each; the ratio is the median of the rounds' own ON / OFF ratios (a
    paired measure: on a shared host, the best ON and the best OFF may come from differently loaded
    minutes), with its range. ``model_dir`` is a model/run directory or a model object.
    """
    model = load_generation_model(model_dir) if isinstance(model_dir, Path) else model_dir
    gen = Generator(model, Memory(memory_dir), device=device, precision=precision)
    # eos is never sampled: ON and OFF sample different tokens, and a run ended early by eos would spread
    # its prefill and the prompt's search over fewer tokens than the other's
    if gen.tokenizer.eos_id is not None:
        eos = torch.tensor([gen.tokenizer.eos_id], dtype=torch.long, device=gen.banned.device)
        gen.banned = torch.cat([gen.banned, eos])
    tokens = tokens_that_fit(gen, tokens)
    gen.generate(PROMPT, GenerationConfig(max_new_tokens=gen.config.chunk_size * 2))  # warm-up (encoder load)
    on: list[tuple[float, float]] = []
    off: list[float] = []
    for r in range(rounds):
        for retrieval in ((True, False) if r % 2 == 0 else (False, True)):
            if retrieval:
                on.append(tokens_per_second(gen, True, tokens, repeats))
            else:
                off.append(tokens_per_second(gen, False, tokens, repeats)[0])
    ratios = sorted(a[0] / b for a, b in zip(on, off, strict=True))
    best_on = max(on)
    out = {"device": str(gen.device), "model": label or getattr(gen.config, "name", ""), "tokens": tokens,
           "parameters": gen.n_parameters, "precision": precision, "threads": torch.get_num_threads(),
           "repeats": repeats, "eos_banned": True,
           "on_tokens_per_s": best_on[0], "off_tokens_per_s": max(off), "search_share": best_on[1],
           "ratio": statistics.median(ratios), "ratio_range": [ratios[0], ratios[-1]], "rounds": rounds}
    print(f"  generation {out['model']} ({out['parameters'] / 1e6:.1f}M) on {out['device']}, {tokens} tokens per run: "
          f"retrieval ON {out['on_tokens_per_s']:.1f} tokens/s ({out['search_share']:.0%} of it searching the "
          f"memory), OFF {out['off_tokens_per_s']:.1f} tokens/s (best of {rounds} rounds); ON/OFF ratio "
          f"{out['ratio']:.2f}, median of the rounds' ({ratios[0]:.2f}–{ratios[-1]:.2f}) (target ≥ 0.9)", flush=True)
    return out


def bench_sizes(presets: list[str], memory_dir: Path, tokens: int, repeats: int, device: str,
                precision: str = "auto") -> list[dict[str, Any]]:
    """The ON/OFF ratio of untrained RETRO presets of growing size on one memory: the search and the
    encoder cost the same per chunk whatever the decoder, so the ratio depends on the model's size."""
    memory = Memory(memory_dir)
    out = []
    for name in presets:
        torch.manual_seed(0)
        model = build_model(get_preset(name, vocab_size=memory.tokenizer.vocab_size, zero_init_cca_out=False))
        out.append(bench_generation(model, memory_dir, tokens, repeats, device, label=name, precision=precision))
    return out


def bench_precast(model_dir: Path, memory_dir: Path, tokens: int, repeats: int, device: str,
                  precision: str) -> dict[str, Any]:
    """Tokens/s decoding from pre-cast linear weights (what Generator does under autocast) against the
    fp32 model whose weights autocast casts on every call, retrieval on and off, interleaved."""
    model = load_generation_model(model_dir)
    gen = Generator(model, Memory(memory_dir), device=device, precision=precision)
    if gen.dtype is None:
        raise SystemExit(f"--precast needs autocast: --precision bf16 or fp16 ({precision!r} on {gen.device} is fp32)")
    arms = {"per-call cast": model, "pre-cast": gen.model}
    tokens = tokens_that_fit(gen, tokens)
    best: dict[str, float] = {}
    for _ in range(3):
        for arm, weights in arms.items():
            gen.model = weights
            for retrieval in (True, False):
                key = f"{arm}, retrieval {'ON' if retrieval else 'OFF'}"
                best[key] = max(best.get(key, 0.0), tokens_per_second(gen, retrieval, tokens, repeats)[0])
    out: dict[str, Any] = {"device": str(gen.device), "dtype": str(gen.dtype), "tokens": tokens, "tokens_per_s": best}
    for mode in ("ON", "OFF"):
        out[f"speedup_{mode}"] = best[f"pre-cast, retrieval {mode}"] / best[f"per-call cast, retrieval {mode}"]
    for key, rate in best.items():
        print(f"  {key}: {rate:.1f} tokens/s", flush=True)
    print(f"  pre-cast / per-call cast ({out['dtype']} on {out['device']}): retrieval ON "
          f"{out['speedup_ON']:.2f}x, OFF {out['speedup_OFF']:.2f}x", flush=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_dir: Path, memory_dir: Path, port: int, device: str,
                 precision: str = "auto") -> subprocess.Popen:
    """`burrow serve` in a subprocess; returns once /health answers."""
    cmd = [sys.executable, "-c", "from burrow.cli import main; main()", "serve", str(model_dir), "--memory",
           str(memory_dir), "--port", str(port), "--device", device, "--precision", precision]
    import httpx  # burrow[serve]'s: the other measurements run on a core install

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("server did not become healthy in 180 s")


async def client_loop(client: Any, stop_at: float, body: dict[str, Any], latencies: list[float],
                      errors: list[str]) -> None:
    """Send requests back to back until ``stop_at``; record each latency or error."""
    seed = 0
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            r = await client.post("/v1/generate", json={**body, "seed": seed})
            if r.status_code != 200:
                errors.append(f"{r.status_code}: {r.text[:200]}")
            else:
                latencies.append(time.perf_counter() - t0)
        except Exception as e:  # httpx.HTTPError and the like: counted, the load goes on
            errors.append(repr(e))
        seed += 1


async def load_test(port: int, clients: int, duration: float, tokens: int) -> dict[str, Any]:
    """``clients`` concurrent clients for ``duration`` seconds; latency percentiles and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    import httpx

    body = {"prompt": PROMPT, "max_tokens": tokens, "top_p": 0.9, "stream": False}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as client:
        stop_at = time.monotonic() + duration
        await asyncio.gather(*(client_loop(client, stop_at, body, latencies, errors) for _ in range(clients)))
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    out = {"clients": clients, "seconds": duration, "tokens_per_request": tokens, "requests": len(latencies),
           "errors": len(errors), "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
           "requests_per_s": len(latencies) / duration, "first_errors": errors[:3]}
    print(f"  server: {clients} clients x {duration:.0f} s, {tokens} tokens per request: {len(latencies)} requests, "
          f"p50 {out['p50_s'] * 1000:.0f} ms, p99 {out['p99_s'] * 1000:.0f} ms, {out['requests_per_s']:.2f} req/s, "
          f"errors {len(errors)} (target 0)")
    return out


# ---------------------------------------------------------------- a pretrained LM reading the memory

VITAL = "wikipedia-vital-summaries/summaries_en.jsonl.gz"
NGRAM = 8


def held_out_prompts(memory: Memory, n: int, words: int = 8) -> list[tuple[str, str]]:
    """(title, prompt) of ``n`` vital-article leads whose title is no memory document's title; the prompt is
    the lead's first ``words`` words."""
    import gzip

    seen = {(d.title or "").strip().lower() for d in memory.store.docs}
    out = []
    with gzip.open(find_data(needs=(VITAL,)) / VITAL, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            title, lead = str(rec.get("title", "")), str(rec.get("extract", ""))
            first = lead.split()
            if title.lower() in seen or len(first) < 2 * words or not title[:1].isalpha():
                continue
            out.append((title, " ".join(first[:words])))
            if len(out) >= n:
                break
    return out


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams of ``text``."""
    import re

    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def passages_for(gen: Any, prompt: str, generated: list[int], k: int) -> list[str]:
    """The passages retrieval reads for prompt + ``generated``: one query (the last q tokens) per block of s."""
    ids = gen.encode(prompt) + list(generated)
    p0, texts = len(ids) - len(generated), []
    for i in range(0, max(1, len(generated)), gen.stride):
        query = gen.query_text(ids[:p0 + i][-gen.query_tokens:])
        if query:
            res = gen.memory.search([query], k=k, retriever=gen.retriever)
            texts += [t for j, t in enumerate(res.texts[0]) if res.ids[0, j] >= 0]
    return texts


def support(text: str, passages: list[str]) -> tuple[int, int]:
    """(generated 8-grams found in ``passages``, generated 8-grams)."""
    gen = ngrams(text)
    ref: set[tuple[str, ...]] = set().union(*(ngrams(p) for p in passages)) if passages else set()
    return len(gen & ref), len(gen)


def bench_lm(lm: str, memory_dir: Path, prompts: int, tokens: int, retriever: str, stride: int,
             device: str, precision: str = "auto") -> dict[str, Any]:
    """Tokens/s and the 8-gram support share of ``lm`` with and without the memory in context."""
    from burrow.generate.readable import lm_generator

    gen = lm_generator(lm, Memory(memory_dir), retriever=retriever, stride=stride, device=device,
                       precision=precision)
    cases = held_out_prompts(gen.memory, prompts)
    gen.generate(cases[0][1], GenerationConfig(max_new_tokens=4, greedy=True))  # warm-up
    rows = []
    for title, prompt in cases:
        row: dict[str, Any] = {"title": title, "prompt": prompt}
        for mode in ("on", "off"):
            res = gen.generate(prompt, GenerationConfig(max_new_tokens=tokens, greedy=True, retrieval=mode == "on"))
            hit, total = support(res.text, passages_for(gen, prompt, res.tokens, k=2))
            row[mode] = {"text": res.text, "tokens": len(res.tokens), "seconds": res.seconds,
                         "tokens_per_s": res.tokens_per_second, "ngrams": total, "supported": hit}
        rows.append(row)
        print(f"  {title}: on {row['on']['tokens_per_s']:.1f} tok/s, {row['on']['supported']}/{row['on']['ngrams']} "
              f"8-grams supported; off {row['off']['tokens_per_s']:.1f} tok/s, "
              f"{row['off']['supported']}/{row['off']['ngrams']}")
    out: dict[str, Any] = {"lm": lm, "memory": memory_dir.name, "retriever": retriever, "stride": stride,
                           "tokens": tokens, "device": str(gen.device), "threads": torch.get_num_threads(),
                           "prompts": len(rows), "rows": rows}
    for mode in ("on", "off"):
        n_tok = sum(r[mode]["tokens"] for r in rows)
        secs = sum(r[mode]["seconds"] for r in rows)
        hits, grams = sum(r[mode]["supported"] for r in rows), sum(r[mode]["ngrams"] for r in rows)
        out[mode] = {"tokens_per_s": n_tok / secs if secs else 0.0, "supported_8gram_share": hits / grams if grams
                     else 0.0, "ngrams": grams}
    print(f"  {lm} reading {memory_dir.name} ({retriever}, s = {stride}) on {out['device']}, {len(rows)} held-out "
          f"prompts x {tokens} tokens: retrieval ON {out['on']['tokens_per_s']:.1f} tokens/s, "
          f"{out['on']['supported_8gram_share']:.1%} of 8-grams supported by the passages; OFF "
          f"{out['off']['tokens_per_s']:.1f} tokens/s, {out['off']['supported_8gram_share']:.1%} "
          "(target ≥ 10 tokens/s)")
    return out


def small_lm_memory(work: Path, articles: int) -> Path:
    """The small WikiText-2 memory of :func:`small_setup` with its BM25 index (no model)."""
    from burrow.memory.bm25 import build_bm25

    memory = _wiki_memory(work, articles)
    build_bm25(memory, progress=False)
    print(f"  (no --memory: a memory of {articles} WikiText-2 articles, {len(memory):,} chunks)")
    return memory.dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="Training run or model directory (default: untrained retro-cpu-small).")
    ap.add_argument("--memory", type=Path, help="Its memory directory.")
    ap.add_argument("--articles", type=int, default=30, help="WikiText-2 articles in the small memory.")
    ap.add_argument("--tokens", type=int, default=256, help="Tokens per generation in the speed test.")
    ap.add_argument("--repeats", type=int, default=3, help="Generations per speed measurement.")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="Seconds of the load test.")
    ap.add_argument("--request-tokens", type=int, default=32, help="max_tokens of each load-test request.")
    ap.add_argument("--sizes", help="Comma-separated RETRO presets (untrained, on --memory or the small memory): "
                    "the ON/OFF ratio per model size; no server test.")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto | bf16 | fp16 | fp32 (the generator's autocast).")
    ap.add_argument("--precast", action="store_true",
                    help="Pre-cast weights against autocast's per-call casts (needs --run/--memory; no server test).")
    ap.add_argument("--threads", type=int, help="torch CPU threads of the speed test (default: torch's choice).")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    ap.add_argument("--lm", help="Bench a pretrained LM reading the memory in context instead (e.g. smollm2).")
    ap.add_argument("--prompts", type=int, default=20, help="With --lm: held-out Wikipedia prompts.")
    ap.add_argument("--lm-tokens", type=int, default=64, help="With --lm: tokens per generation.")
    ap.add_argument("--retriever", default="bm25", help="With --lm: bm25 or dense.")
    ap.add_argument("--stride", type=int, default=32, help="With --lm: tokens between retrievals.")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precast and (args.lm or args.sizes):
        ap.error("--precast measures a --run on its --memory; not with --lm or --sizes")
    unpaired = (args.run is None) != (args.memory is None) or (args.precast and args.run is None)
    if unpaired and not (args.lm or args.sizes):
        ap.error("give both --run and --memory, or neither (--precast needs them)")
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark ``args`` asks for: in-context LM, model sizes, pre-cast weights, or generation + server."""
    with tempfile.TemporaryDirectory() as tmp:
        if args.lm:
            memory_dir = args.memory or small_lm_memory(Path(tmp), args.articles)
            return {"lm": bench_lm(args.lm, memory_dir, args.prompts, args.lm_tokens, args.retriever, args.stride,
                                   args.device, args.precision)}
        if args.sizes:
            memory_dir = args.memory or _wiki_memory(Path(tmp), args.articles).dir
            return {"sizes": bench_sizes(args.sizes.split(","), memory_dir, args.tokens, args.repeats, args.device,
                                         args.precision)}
        if args.precast:
            return {"precast": bench_precast(args.run, args.memory, args.tokens, args.repeats, args.device,
                                             args.precision)}
        model_dir, memory_dir = (args.run, args.memory) if args.run else small_setup(Path(tmp), args.articles)
        results = {"generation": bench_generation(model_dir, memory_dir, args.tokens, args.repeats, args.device,
                                                  precision=args.precision)}
        port = free_port()
        server = start_server(model_dir, memory_dir, port, args.device, args.precision)
        try:
            results["server"] = asyncio.run(load_test(port, args.clients, args.duration, args.request_tokens))
        finally:
            server.terminate()
            server.wait(30)
        return results

if __name__ == "__main__":
    main()
