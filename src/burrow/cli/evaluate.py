"""`burrow eval`: bits-per-byte of trained models (baseline, RETRO[OFF], RETRO[ON]), leakage and sweeps."""

from __future__ import annotations

from pathlib import Path

import typer

from burrow.cli.options import DEFAULT_K, Device, EvalSeqLen, K, Precision, default_of, out_option
from burrow.errors import BurrowError
from burrow.evaluate.config import DEFAULT_SWEEP_K, EvalConfig, KnnLMConfig


def eval_command(
    runs: list[Path] = typer.Argument(..., help="Run or model directories (a RETRO model is scored [OFF] and [ON]); "
                                                "NAME=RUN1,RUN2,... is one arm of several seeds (mean and interval; "
                                                "gains paired per document)."),
    memory: Path | None = typer.Option(None, "--memory", "-m", help="Memory directory: tokenizer, RETRO[ON] "
                                                                    "neighbours, leakage."),
    data: list[str] = typer.Option(..., "--data", "-d", help="Evaluation files or folders (repeat the option)."),
    out: Path = out_option(..., "Output directory (report, plots, cached neighbours)."),
    k: K = DEFAULT_K,
    seq_len: EvalSeqLen = default_of(EvalConfig, "seq_len"),
    leakage: bool = typer.Option(False, "--leakage", help="r(C) and bpb(α) (RETRO §2.6)."),
    sweep_k: bool = typer.Option(False, "--sweep-k",
                                 help=f"RETRO[ON] bpb at k = {', '.join(map(str, DEFAULT_SWEEP_K))}."),
    sweep_memory: bool = typer.Option(False, "--sweep-memory", help="RETRO[ON] bpb at memory fractions 1/16 … 1."),
    max_docs: int | None = typer.Option(None, "--max-docs", help="Score only the first N documents."),
    text_field: str = typer.Option(default_of(EvalConfig, "text_field"), "--text-field",
                                   help="JSONL/Parquet field holding the text of --data files ('a,b': a, else b)."),
    txt_split: str = typer.Option(default_of(EvalConfig, "txt_split"), "--txt-split",
                                  help="How .txt --data files split into documents: auto|file|blank-line|wikitext|line "
                                       "(as the memory was built, for its same-document matching)."),
    device: Device = default_of(EvalConfig, "device"),
    precision: Precision = default_of(EvalConfig, "precision"),
    batch_tokens: int = typer.Option(default_of(EvalConfig, "batch_tokens"), "--batch-tokens",
                                     help="Tokens per forward batch."),
    method: list[str] = typer.Option([], "--method", help="Other ways of reading the memory, each against its own "
                                                         "base: knnlm, incontext, random (RETRO with random "
                                                         "neighbours). Repeat or comma-separate."),
    lm: str | None = typer.Option(None, "--lm", help="An HF causal LM for --method incontext (smollm2, a local "
                                                     "folder, or a hub id when online)."),
    retriever: str = typer.Option("bm25", "--retriever", help="In-context retriever: bm25 | dense."),
    stride: int = typer.Option(32, "--stride", help="In-context: tokens scored per retrieval."),
    query_tokens: int | None = typer.Option(None, "--query-tokens", help="In-context query length (default 32 "
                                                                        "for bm25, 64 for dense)."),
    knn_k: int = typer.Option(default_of(KnnLMConfig, "k"), "--knn-k", help="kNN-LM neighbours per token."),
    knn_lambda: float | None = typer.Option(None, "--knn-lambda", help="Fixed kNN-LM λ (with --knn-temperature); "
                                                                       "default: tuned by cross-fitting."),
    knn_temperature: float | None = typer.Option(None, "--knn-temperature", help="Fixed kNN-LM temperature T."),
) -> None:
    """Bits-per-byte of RUN... on whole documents of --data, side by side; leakage, sweeps and retrieval
    methods (kNN-LM, in-context retrieval, controls) on request."""
    from burrow.evaluate import DEFAULT_SWEEP_MEMORY, evaluate_runs, format_table
    from burrow.evaluate.incontext import InContextConfig
    from burrow.evaluate.methods import METHODS, MethodsConfig
    from burrow.evaluate.runs import check_eval_out

    check_eval_out(out, data)  # before anything is written there (the footprint too)
    _check_positive({"--batch-tokens": batch_tokens, "--max-docs": max_docs, "--stride": stride,
                     "--query-tokens": query_tokens, "--knn-k": knn_k})
    if seq_len is not None and seq_len < 2:
        raise BurrowError(f"--seq-len must be ≥ 2, got {seq_len}")
    if (knn_lambda is None) != (knn_temperature is None):
        raise BurrowError("give both --knn-lambda and --knn-temperature (fixed), or neither (tuned by cross-fitting)")
    names = [m.strip() for item in method for m in item.split(",")]
    if any(not m for m in names):
        raise BurrowError(f"--method has an empty entry ({', '.join(map(repr, method))}); choose from "
                          f"{', '.join(METHODS)}, repeated or comma-separated")
    config = EvalConfig(seq_len=seq_len, k=k, leakage=leakage, max_docs=max_docs, text_field=text_field,
                        txt_split=txt_split, device=device,
                        precision=precision, batch_tokens=batch_tokens,
                        sweep_k=DEFAULT_SWEEP_K if sweep_k else (),
                        sweep_memory=DEFAULT_SWEEP_MEMORY if sweep_memory else ())
    methods = MethodsConfig(
        methods=tuple(names), lm=lm,
        knnlm=KnnLMConfig(k=knn_k, lam=knn_lambda, temperature=knn_temperature),
        incontext=InContextConfig(retriever=retriever, stride=stride, query_tokens=query_tokens, device=device,
                                  precision=precision))
    from burrow.footprint import forward_flops, model_parameters, track

    with track(out, "evaluation") as stage:
        result, paths = evaluate_runs(runs, memory, data, config, out, methods)
        passes = sum((model_parameters(r.split("=")[-1].split(",")[0]) or 0) for r in map(str, runs))
        stage.flops, stage.flops_formula = forward_flops(
            passes or None, 2 * result.data.n_tokens * max(1, len(result.scores) // max(1, len(runs))),
            "tokens fed (windows overlap by half; each model once per mode; retrieval encoding not counted)")
    typer.echo(format_table(result))
    for name, path in paths.items():
        typer.echo(f"  {name:<13} {path}")


def _check_positive(options: dict[str, int | None]) -> None:
    """Each given integer option is ≥ 1 (refused in the option's own name, before any work)."""
    for flag, value in options.items():
        if value is not None and value < 1:
            raise BurrowError(f"{flag} must be ≥ 1, got {value}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the root app."""
    app.command("eval")(eval_command)
