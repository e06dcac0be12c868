"""lm-eval task configs (YAML) for the burrow tasks, over the files of one data directory.

Every config names :func:`burrow.tasks.datasets.custom_dataset` with the data directory (and the
open-book passages file), so lm-eval reads the offline files and downloads nothing. The folder they
are written to is an lm-eval ``--include_path``: ``burrow tasks run`` uses it, and so can lm-eval's
own CLI (``burrow tasks configs -o DIR`` writes one; task names are ``burrow_<task>``,
``burrow_mmlu_<subject>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from burrow.artefacts import atomic_path
from burrow.tasks.catalog import MMLU_SUBJECTS, TaskSpec, lm_eval_names
from burrow.tasks.datasets import check_files

# Of the burrow task configs, bumped when a prompt or a metric changes: cached results then rerun
# (1.1: Winogrande's continuation had two leading spaces).
VERSION = 1.1
QA_STOP = ["\n", ".", ","]  # stop strings of the QA answers (lm-eval's nq_open / triviaqa)
QA_MAX_TOKENS = 32  # most tokens of a generated answer


class Fn(str):
    """A ``!function module.name`` reference in a task config."""


def _fn_representer(dumper: yaml.SafeDumper, value: Fn) -> yaml.Node:
    return dumper.represent_scalar("!function", str(value))


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Fn, _fn_representer)

_S = "burrow.tasks.scoring."


def _metric(name: str, aggregation: str = "mean", higher: bool = True) -> dict[str, Any]:
    return {"metric": name, "aggregation": aggregation, "higher_is_better": higher}


def _body(spec: TaskSpec) -> dict[str, Any]:
    """The task-specific part of a config: prompt, choices, target, metrics."""
    name = spec.name
    if name in ("arc_easy", "arc_challenge", "piqa"):
        return {"output_type": "multiple_choice", "doc_to_text": "{{query}}", "doc_to_choice": "choices",
                "doc_to_target": "gold", "metric_list": [_metric("acc"), _metric("acc_norm")]}
    if name == "winogrande":
        return {"output_type": "multiple_choice", "doc_to_text": Fn(_S + "winogrande_gold"),
                "doc_to_target": Fn(_S + "winogrande_target"), "doc_to_choice": Fn(_S + "winogrande_choices"),
                "metric_list": [_metric("acc")]}
    if name == "lambada":
        return {"output_type": "loglikelihood", "doc_to_text": "{{context}}", "doc_to_target": "{{' ' + continuation}}",
                "target_delimiter": "", "metric_list": [_metric("perplexity", "perplexity", False), _metric("acc")]}
    if name.startswith("truthfulqa"):
        key = "mc1_targets" if name.endswith("mc1") else "mc2_targets"
        body = {"output_type": "multiple_choice", "doc_to_text": Fn(_S + "truthfulqa_text"),
                "doc_to_choice": f"{{{{{key}.choices}}}}", "doc_to_target": 0, "metric_list": [_metric("acc")]}
        if key == "mc2_targets":
            body["process_results"] = Fn(_S + "mc2_results")
        return body
    if name == "wikitext":
        return {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": Fn(_S + "wikitext_target"),
                "process_results": Fn(_S + "wikitext_results"),
                "metric_list": [_metric("bits_per_byte", "bits_per_byte", False)]}
    # nq_* / triviaqa_*: greedy answers, exact match
    return {"output_type": "generate_until", "doc_to_text": Fn(_S + "qa_text"), "doc_to_target": "{{answers[0]}}",
            "process_results": Fn(_S + "qa_results"),
            "generation_kwargs": {"until": QA_STOP, "max_gen_toks": QA_MAX_TOKENS, "do_sample": False},
            "metric_list": [_metric("exact_match")]}


def _mmlu_body(subject: str) -> dict[str, Any]:
    readable = subject.replace("_", " ")
    return {"output_type": "multiple_choice", "test_split": "test", "fewshot_split": "dev", "num_fewshot": 5,
            "fewshot_config": {"sampler": "first_n"},
            "description": f"The following are multiple choice questions (with answers) about {readable}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                           "D. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer", "metric_list": [_metric("acc")]}


def task_configs(spec: TaskSpec, data_dir: Path, passages: Path | None = None) -> list[dict[str, Any]]:
    """The lm-eval config dicts of burrow task ``spec`` (MMLU: one per subject)."""
    data = str(Path(data_dir).resolve())
    common: dict[str, Any] = {"custom_dataset": Fn("burrow.tasks.datasets.custom_dataset"), "test_split": "test",
                              "metadata": {"version": VERSION}}
    if spec.name == "mmlu":
        return [{"task": name, **common, "dataset_kwargs": {"task": "mmlu", "data_dir": data, "subject": subject},
                 **_mmlu_body(subject)} for name, subject in zip(lm_eval_names(spec), MMLU_SUBJECTS, strict=True)]
    kwargs: dict[str, Any] = {"task": spec.name, "data_dir": data}
    if passages is not None:
        kwargs["passages"] = str(Path(passages).resolve())
    return [{"task": lm_eval_names(spec)[0], **common, "dataset_kwargs": kwargs, **_body(spec)}]


def write_configs(specs: list[TaskSpec], data_dir: Path, out_dir: Path,
                  passages: dict[str, Path] | None = None) -> Path:
    """Write the YAML configs of ``specs`` into ``out_dir`` (an lm-eval include path); returns it.

    Missing task files fail here, before any model is loaded; a task that needs retrieved passages
    (open book) is written only when ``passages`` has its file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        check_files(spec, data_dir)
        found = (passages or {}).get(spec.name)
        if spec.needs_memory and found is None:
            continue
        for config in task_configs(spec, data_dir, found):
            with atomic_path(out_dir / f"{config['task']}.yaml") as tmp:
                tmp.write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True),
                               encoding="utf-8")
    return out_dir
