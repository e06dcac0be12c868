"""The external anchor: SmolLM2 through burrow's model and through lm-eval's own ``hf`` backend agree."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # loads SmolLM2 (~20 s) and scores it twice in fp32
def test_smollm2_through_burrow_matches_lm_eval_hf(task_data):
    import lm_eval
    from lm_eval.models.huggingface import HFLM as LmEvalHF
    from lm_eval.tasks import TaskManager

    from burrow.data.shared import find_data
    from burrow.tasks import LMConfig, load_lm, parse_tasks
    from burrow.tasks.catalog import lm_eval_names
    from burrow.tasks.configs import write_configs

    try:
        data = find_data(None, needs=("arc/arc_easy_test.jsonl", "winogrande/winogrande_dev.jsonl"))
    except Exception:  # no shared data here: the tiny fixture still compares the two backends
        data = task_data
    specs = parse_tasks(["arc_easy,winogrande,lambada"])
    import tempfile
    from pathlib import Path

    tm = TaskManager(include_path=str(write_configs(specs, data, Path(tempfile.mkdtemp()))), include_defaults=False)
    ours = load_lm("smollm2", config=LMConfig(device="cpu", precision="fp32"))
    theirs = LmEvalHF(pretrained=ours.backend.lm.module, tokenizer=ours.backend.lm.tokenizer, batch_size=4,
                      device="cpu", max_length=2048)
    for spec in specs:
        names = lm_eval_names(spec)
        a = lm_eval.simple_evaluate(model=ours, tasks=names, task_manager=tm, limit=10, verbosity="ERROR",
                                    bootstrap_iters=0, log_samples=True)
        b = lm_eval.simple_evaluate(model=theirs, tasks=names, task_manager=tm, limit=10, verbosity="ERROR",
                                    bootstrap_iters=0, log_samples=True)
        la = [s["resps"] for s in a["samples"][names[0]]]
        lb = [s["resps"] for s in b["samples"][names[0]]]
        for ra, rb in zip(la, lb, strict=True):  # request by request: the same log-likelihoods
            for (x,), (y,) in zip(ra, rb, strict=True):
                assert float(x[0]) == pytest.approx(float(y[0]), abs=2e-3) and bool(x[1]) == bool(y[1]), spec.name
        metric = f"{spec.metrics[0]},none"
        assert a["results"][names[0]][metric] == pytest.approx(b["results"][names[0]][metric], abs=0.005)
