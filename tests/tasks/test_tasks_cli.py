"""`burrow tasks` end to end on tiny runs and a tiny data folder: the contract, the report, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ALL = "wikitext,lambada,nq_closed,nq_open,triviaqa_closed,triviaqa_open,truthfulqa_mc1,truthfulqa_mc2,arc_easy," \
      "arc_challenge,piqa,winogrande,mmlu"  # the catalogue's order


def _burrow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``burrow ARGS`` in a fresh interpreter; with ``cwd``, there and outside any git repository."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(cwd.parent)} if cwd is not None else None
    return subprocess.run([sys.executable, "-m", "burrow", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


QUICK = "lambada,truthfulqa_mc2,nq_open"  # the full catalogue runs in the slow test below


@pytest.mark.e2e
def test_tasks_run_writes_the_contract_and_the_report_and_resumes(task_runs, task_memory, task_data, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "out"
    args = ["tasks", "run", str(task_runs["retro"]), "--memory", str(task_memory.dir), "--tasks", QUICK,
            "--data", str(task_data), "--limit", "2", "-o", str(out), "--precision", "fp32"]
    done = _burrow(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not a git repository" not in done.stderr  # lm-eval's `git describe` for its record, silenced
    results = json.loads((out / "results.json").read_text())
    _check_contract(results, ["retro[OFF]", "retro[ON]"], QUICK.split(","))
    assert results["tasks"]["truthfulqa_mc2"]["chance"] == pytest.approx(2 / 3)
    assert results["models"]["retro[ON]"]["lambada"] != results["models"]["retro[OFF]"]["lambada"]
    report = (out / "report.md").read_text()
    assert "| reading comprehension | lambada | acc | 0.0 |" in report and "74.5" in report  # chance, Gopher 280B
    assert (out / "report.png").stat().st_size > 1000 and (out / "tasks.manifest.json").exists()
    assert "question" in (out / "passages" / "nq_open.jsonl").read_text()
    # resume: the same run again scores nothing (lm-eval is never called) and gives the same results
    import lm_eval

    from burrow.tasks import LMConfig, TasksConfig, run_tasks

    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda *a, **k: pytest.fail("a cached task was scored again"))
    config = TasksConfig(lm=LMConfig(precision="fp32"), progress=False)
    again = run_tasks([str(task_runs["retro"])], QUICK.split(","), out, memory=task_memory.dir, data_dir=task_data,
                      limit=2, config=config)
    assert again == results
    # A changed data file is scored again: the key holds the files' size and time, not only their folder.
    import os

    class Rescored(Exception):
        pass

    def rescore(*a, tasks, **k):
        raise Rescored(tasks)

    monkeypatch.setattr(lm_eval, "simple_evaluate", rescore)
    lambada = task_data / "lambada-openai" / "lambada_openai.jsonl"
    stat = lambada.stat()
    os.utime(lambada, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(Rescored) as e:
        run_tasks([str(task_runs["retro"])], QUICK.split(","), out, memory=task_memory.dir, data_dir=task_data,
                  limit=2, config=config)
    assert e.value.args[0] == ["burrow_lambada"]
    os.utime(lambada, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _check_contract(results: dict, labels: list[str], tasks: list[str]) -> None:
    assert set(results) == {"models", "tasks"}
    assert list(results["models"]) == labels and list(results["tasks"]) == tasks
    for label, per_task in results["models"].items():
        for task, info in results["tasks"].items():
            got = per_task[task]
            assert set(info) == {"category", "metrics", "chance"}
            assert set(info["metrics"]) <= set(got) and got["n"] >= 2, (label, task)
            for metric in info["metrics"]:
                assert isinstance(got[metric], float) and f"{metric}_stderr" in got


@pytest.mark.slow
def test_tasks_run_every_task_on_three_models(task_runs, task_memory, task_data, tmp_path):
    out = tmp_path / "out"
    done = _burrow("tasks", "run", str(task_runs["baseline"]), str(task_runs["retro"]), "--memory",
                   str(task_memory.dir), "--tasks", "all", "--data", str(task_data), "--limit", "2", "-o", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    _check_contract(results, ["baseline", "retro[OFF]", "retro[ON]"], ALL.split(","))
    assert results["models"]["baseline"]["mmlu"]["n"] == 2 * 57  # the limit applies per subject
    assert results["tasks"]["truthfulqa_mc1"]["chance"] == pytest.approx(0.5)
    assert "| MMLU | mmlu | acc | 25.0 |" in (out / "report.md").read_text()


def test_tasks_bad_input_is_one_error_line(task_runs, task_memory, task_data, tmp_path):
    from burrow.errors import BurrowError
    from burrow.tasks import run_tasks

    retro, mem = str(task_runs["retro"]), task_memory.dir
    cases = [
        (dict(models=[retro], tasks=["hellaswag"], memory=mem), "unknown task 'hellaswag'"),
        (dict(models=[retro], tasks=["arc_easy"], memory=None), "pass --memory"),
        (dict(models=[str(task_runs["stranger"])], tasks=["arc_easy"], memory=mem), "tokenizer"),
        (dict(models=["smollm2"], tasks=["triviaqa_open"], memory=None), "pass --memory"),
    ]
    for kwargs, words in cases:
        with pytest.raises(BurrowError, match=words):
            run_tasks(out=tmp_path / "o", data_dir=task_data, limit=1, **kwargs)
    empty = tmp_path / "empty"
    (empty / "arc").mkdir(parents=True)
    (empty / "arc" / "arc_easy_test.jsonl").write_text("")
    with pytest.raises(BurrowError, match="winogrande_dev.jsonl is missing"):
        run_tasks([retro], ["arc_easy", "winogrande"], tmp_path / "o", memory=mem, data_dir=empty)
    done = _burrow("tasks", "run", retro, "--tasks", "arc_easy", "--data", str(task_data), "-o", str(tmp_path / "o"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.slow  # lm-eval's CLI indexes all its own tasks first (~15 s)
def test_lm_eval_cli_runs_the_burrow_model(task_runs, task_memory, task_data, tmp_path):
    """lm-eval's own CLI, with burrow registered (python -m burrow.tasks.harness), on burrow's task configs."""
    cfg = tmp_path / "cfg"
    made = _burrow("tasks", "configs", "-o", str(cfg), "--tasks", "arc_easy", "--data", str(task_data))
    assert made.returncode == 0, made.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "-m", "burrow.tasks.harness", "run", "--model", "burrow", "--model_args",
         f"run={task_runs['retro']},memory={task_memory.dir},mode=on,precision=fp32", "--tasks", "burrow_arc_easy",
         "--include_path", str(cfg), "--limit", "2", "--output_path", str(tmp_path / "lm")],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "burrow_arc_easy" in done.stdout and "acc" in done.stdout
    assert list((tmp_path / "lm").rglob("results_*.json"))


def test_a_model_that_fails_to_load_leaves_no_output_folder(task_data, tmp_path, monkeypatch):
    """A Hugging Face name that cannot load (offline) fails after the task configs are written: a new -o
    folder goes again; one that a run already scored into keeps its results."""
    from burrow.errors import BurrowError
    from burrow.tasks import runner

    def fails(source, memory):
        raise BurrowError(f"cannot load Hugging Face model {source!r}")

    monkeypatch.setattr(runner, "open_model", fails)
    out = tmp_path / "new" / "o"
    with pytest.raises(BurrowError, match="cannot load"):
        runner.run_tasks(["no-such-model"], ["arc_easy"], out, data_dir=task_data, limit=1)
    assert not (tmp_path / "new").exists()
    (out / "per_task").mkdir(parents=True)
    with pytest.raises(BurrowError, match="cannot load"):
        runner.run_tasks(["no-such-model"], ["arc_easy"], out, data_dir=task_data, limit=1)
    assert (out / "per_task").is_dir() and (out / "configs").is_dir()
