"""Benchmark and anchor ``burrow tasks``: burrow's lm-eval model against lm-eval's own ``hf`` backend.

    .venv/bin/python bench/tasks.py [--limit 40] [--tasks arc_easy,piqa,...] [--retro RUN --memory DIR]

One SmolLM2-135M (loaded once, the same weights for both) is scored on the same offline task configs
through burrow's model (:class:`burrow.tasks.BurrowEvalLM`) and through lm-eval's ``HFLM``, both in fp32:
per task the headline metric of each (the anchor: they should agree within 0.5 points) and requests
per second of each (the speed ratio). With ``--retro``, a RETRO run is scored [ON] on one task and the
number of memory searches is set against the request tokens: retrieval happens once per distinct
chunk, never once per token.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.tasks import TaskManager

from burrow.data.shared import find_data
from burrow.tasks import LMConfig, load_lm, parse_tasks
from burrow.tasks.catalog import lm_eval_names
from burrow.tasks.configs import write_configs
from burrow.tasks.runner import extract

DEFAULT_TASKS = "arc_easy,arc_challenge,piqa,winogrande,lambada,truthfulqa_mc1"


def counted(lm: Any) -> dict[str, int]:
    """Count the requests lm-eval hands ``lm`` (patched onto the instance)."""
    count = {"requests": 0}
    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        method = getattr(lm, name)

        def wrapper(reqs: list, *a: Any, _m: Any = method, **k: Any) -> Any:
            count["requests"] += len(reqs)
            return _m(reqs, *a, **k)

        setattr(lm, name, wrapper)
    return count


def score(lm: Any, specs: list, tm: TaskManager, limit: int) -> tuple[dict[str, float], int, float]:
    """(task -> headline metric, requests, seconds) of ``lm`` on ``specs`` (after an untimed one-document warm-up)."""
    lm_eval.simple_evaluate(model=lm, tasks=lm_eval_names(specs[0]), task_manager=tm, limit=1, verbosity="ERROR",
                            bootstrap_iters=0)
    count = counted(lm)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    for spec in specs:
        res = lm_eval.simple_evaluate(model=lm, tasks=lm_eval_names(spec), task_manager=tm, limit=limit,
                                      verbosity="ERROR", bootstrap_iters=0)
        out[spec.name] = extract(spec, res)[spec.metrics[0]]
    return out, count["requests"], time.perf_counter() - t0


def anchor(args: argparse.Namespace, data: Path) -> None:
    """SmolLM2 through burrow and through lm-eval's hf backend: agreement and requests/s."""
    from lm_eval.models.huggingface import HFLM as LmEvalHF

    specs = parse_tasks([args.tasks])
    tm = TaskManager(include_path=str(write_configs(specs, data, args.out / "configs")), include_defaults=False)
    t0 = time.perf_counter()
    ours = load_lm("smollm2", config=LMConfig(device="cpu", precision="fp32", max_length=args.max_length,
                                              batch_tokens=args.batch_tokens))
    print(f"SmolLM2 loaded in {time.perf_counter() - t0:.1f} s")
    hf = ours.backend.lm  # the same module and tokenizer, handed to lm-eval's own backend
    theirs = LmEvalHF(pretrained=hf.module, tokenizer=hf.tokenizer, batch_size=args.hf_batch, device="cpu",
                      max_length=args.max_length)
    a, na, ta = score(ours, specs, tm, args.limit)
    b, nb, tb = score(theirs, specs, tm, args.limit)
    print(f"\n## Anchor: SmolLM2-135M, first {args.limit} documents per task, fp32\n")
    print("| task | metric | burrow | lm-eval hf | difference (points) |\n|---|---|---:|---:|---:|")
    for spec in specs:
        x, y = a[spec.name], b[spec.name]
        print(f"| {spec.name} | {spec.metrics[0]} | {100 * x:.2f} | {100 * y:.2f} | {100 * (x - y):+.2f} |")
    print(f"\n## Speed: {na} requests\n\n| backend | seconds | requests/s |\n|---|---:|---:|")
    print(f"| burrow (batch_tokens {args.batch_tokens}) | {ta:.1f} | {na / ta:.2f} |")
    print(f"| lm-eval hf (batch_size {args.hf_batch}) | {tb:.1f} | {nb / tb:.2f} |")
    print(f"\nburrow / lm-eval hf: {(na / ta) / (nb / tb):.2f}×")


def retro_searches(args: argparse.Namespace, data: Path) -> None:
    """RETRO[ON] on TruthfulQA MC1 (its shared six-shot preamble spans several chunks): memory searches
    against request tokens."""
    specs = parse_tasks(["truthfulqa_mc1"])
    tm = TaskManager(include_path=str(write_configs(specs, data, args.out / "configs")), include_defaults=False)
    lm = load_lm(str(args.retro), args.memory, "on", LMConfig(device="cpu"))
    tokens = {"n": 0}
    original = lm._score

    def scored(rows: list) -> list:
        tokens["n"] += sum(len(r.tokens) for r in rows)
        return original(rows)

    lm._score = scored  # type: ignore[method-assign]
    res, n, secs = score(lm, specs, tm, args.limit)
    searched = lm.neighbours.searched if lm.neighbours is not None else 0
    print(f"\n## RETRO[ON] ({args.retro}) on truthfulqa_mc1, {args.limit} questions: {n} requests, "
          f"{tokens['n']} input tokens, {searched} chunk searches ({searched / max(tokens['n'], 1):.4f} per token; "
          f"chunk length {lm.backend.chunk_size}), acc {res['truthfulqa_mc1']:.3f}, {n / secs:.2f} requests/s")


def main() -> None:
    """Parse arguments; run the anchor and speed comparison, then the RETRO search count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/burrow-bench-tasks"))
    parser.add_argument("--tasks", default=DEFAULT_TASKS)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--hf-batch", type=int, default=8)
    parser.add_argument("--retro", type=Path, default=None, help="A RETRO run for the search count.")
    parser.add_argument("--memory", type=Path, default=None)
    parser.add_argument("--skip-anchor", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = find_data(args.data, needs=("arc/arc_easy_test.jsonl",))
    if not args.skip_anchor:
        anchor(args, data)
    if args.retro is not None:
        retro_searches(args, data)


if __name__ == "__main__":
    main()
