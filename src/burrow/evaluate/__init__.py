"""Evaluation: bits-per-byte on whole documents (baseline, RETRO[OFF], RETRO[ON]), the paper's leakage
analysis (r(C), bpb(α)), sweeps over k and memory size, bootstrap intervals, and reports.

    from burrow.evaluate import EvalConfig, evaluate, model_entries, write_report
    models = {**model_entries("baseline", base), **model_entries("retro", retro)}
    result = evaluate(models, memory, ["valid.txt"], EvalConfig(leakage=True), cache_dir="out")
    result.bpb("retro [ON]", alpha=0.125); result.gain("retro [ON]", "baseline")
    write_report(result, "out")

Conventions (start token, stride, byte attribution, retrieval queries, leakage): docs/evaluation.md.
"""

from typing import TYPE_CHECKING

from burrow.lazy import lazy_exports

if TYPE_CHECKING:
    from burrow.evaluate.bpb import Gain, ModelScore, Window, bootstrap_gain, score_model, window_plan
    from burrow.evaluate.config import DEFAULT_SWEEP_K, DEFAULT_SWEEP_MEMORY, EvalConfig
    from burrow.evaluate.data import EvalData, from_store, from_texts, load_eval_data
    from burrow.evaluate.leakage import DEFAULT_ALPHAS, Leakage, bpb_alpha, longest_common_run, measure_leakage
    from burrow.evaluate.pipeline import EvalResult, ModelEntry, evaluate, load_eval_model, model_entries
    from burrow.evaluate.report import format_table, to_json, write_report
    from burrow.evaluate.runs import evaluate_runs
    from burrow.evaluate.sweeps import MemorySubset

__all__ = [
    "DEFAULT_ALPHAS", "DEFAULT_SWEEP_K", "DEFAULT_SWEEP_MEMORY", "EvalConfig", "EvalData", "EvalResult", "Gain",
    "Leakage", "MemorySubset", "ModelEntry", "ModelScore", "Window", "bootstrap_gain", "bpb_alpha", "evaluate",
    "evaluate_runs", "format_table", "from_store", "from_texts", "load_eval_data", "load_eval_model",
    "longest_common_run", "measure_leakage", "model_entries", "score_model", "to_json", "window_plan",
    "write_report",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "bpb": ["Gain", "ModelScore", "Window", "bootstrap_gain", "score_model", "window_plan"],
    "config": ["DEFAULT_SWEEP_K", "DEFAULT_SWEEP_MEMORY", "EvalConfig"],
    "data": ["EvalData", "from_store", "from_texts", "load_eval_data"],
    "leakage": ["DEFAULT_ALPHAS", "Leakage", "bpb_alpha", "longest_common_run", "measure_leakage"],
    "pipeline": ["EvalResult", "ModelEntry", "evaluate", "load_eval_model", "model_entries"],
    "report": ["format_table", "to_json", "write_report"],
    "runs": ["evaluate_runs"],
    "sweeps": ["MemorySubset"],
})
