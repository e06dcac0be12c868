"""`burrow tasks` on damaged task files, a damaged results.json and wrong paths: one `error:` line, exit 2,
nothing written (a new -o folder is not left behind, an old report is not overwritten)."""

from __future__ import annotations

import json
import shutil

import pytest

ARC = "arc/arc_easy_test.jsonl"
ROW = {"query": "Question: Q?", "choices": ["a", "b"], "gold": 0}

#: (task, file under --data, what it is replaced with, words of the error) for every loader.
DAMAGED = [
    ("arc_easy", ARC, json.dumps(ROW) + "\n{not json\n", "arc_easy_test.jsonl, line 2 is not valid JSON"),
    ("arc_easy", ARC, "", "arc_easy_test.jsonl holds no rows"),
    ("arc_easy", ARC, b"\xff\xfe\x00garbage", "arc_easy_test.jsonl is not UTF-8 text"),
    ("arc_easy", ARC, json.dumps({"question": "Q?", "choices": ["a", "b"], "gold": 0}),
     "arc_easy_test.jsonl, line 1 has no field 'query'"),
    ("arc_easy", ARC, json.dumps({**ROW, "gold": 5}), "line 1 is not a valid row (gold 5 is not one of the 2 choices)"),
    ("arc_easy", ARC, None, "arc_easy_test.jsonl is a folder"),
    ("piqa", "piqa/piqa_validation.jsonl", json.dumps({**ROW, "choices": "ab"}), "piqa_validation.jsonl, line 1"),
    ("winogrande", "winogrande/winogrande_dev.jsonl",
     json.dumps({"context_options": ["a", "b"], "continuation": "c", "gold": 2}), "gold 2 is not one of the 2"),
    ("lambada", "lambada-openai/lambada_openai.jsonl", json.dumps({"context": "c"}), "has no field 'continuation'"),
    ("nq_closed", "natural-questions-subset/nq_closed_824.jsonl", json.dumps({"context": "Q", "answer": ""}),
     "nq_closed_824.jsonl, line 1 is not a valid row (no answer)"),
    ("truthfulqa_mc1", "truthfulqa/mc_task_v0_817.json",
     json.dumps([{"question": "q", "mc1_targets": {"x": 0}, "mc2_targets": {"x": 1}}]), "question 1 is not a valid"),
    ("mmlu", "mmlu/test/anatomy_test.csv", "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,7\n",
     "anatomy_test.csv, line 2 is not a valid row (gold 7 is not one of the 4 choices)"),
    ("wikitext", "wikitext-2/wiki.test.raw.gz", "not gzip", "wiki.test.raw.gz cannot be read (Not a gzipped file"),
]


@pytest.mark.parametrize(("task", "rel", "content", "words"), DAMAGED,
                         ids=[f"{task}-{i}" for i, (task, *_) in enumerate(DAMAGED)])
def test_a_damaged_task_file_is_one_error_line_and_leaves_no_output_folder(task, rel, content, words, task_data,
                                                                          task_runs, task_memory, tmp_path,
                                                                          burrow_cli):
    data = shutil.copytree(task_data, tmp_path / "data")
    path = data / rel
    path.unlink()
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "new" / "o"
    code, _, err = burrow_cli("tasks", "run", task_runs["retro"], "-m", task_memory.dir, "-t", f"lambada,{task}",
                              "--data", data, "-o", out, "--limit", "1")
    assert code == 2 and err.startswith(f"error: task file {path}") and words in err, err
    assert len(err.strip().splitlines()) == 1 and "--data" in err
    assert not (tmp_path / "new").exists()


GOOD = {"models": {"retro[OFF]": {"arc_easy": {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.5, "acc_norm_stderr": None,
                                               "n": 2}}},
        "tasks": {"arc_easy": {"category": "question answering", "metrics": ["acc", "acc_norm"], "chance": 0.25}}}


@pytest.mark.parametrize(("results", "words"), [
    ('{"models": 5}', 'expected {"models"'),
    ({"models": {"x": {"arc_easy": {"acc": "high"}}}, "tasks": {}}, "no tasks"),
    ({**GOOD, "models": {"x": {"arc_easy": {"acc": "high"}}}}, "model x, task arc_easy: expected metric -> number"),
    ({**GOOD, "tasks": {"hellaswag": GOOD["tasks"]["arc_easy"]}}, "unknown task 'hellaswag'"),
    ('{"models": {', "is damaged"),
])
def test_tasks_report_refuses_a_damaged_results_json_and_keeps_the_old_report(results, words, tmp_path, burrow_cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    (out / "report.md").write_text("old")
    code, _, err = burrow_cli("tasks", "report", out)
    assert code == 2 and err.startswith(f"error: {out / 'results.json'}") and words in err, err
    assert len(err.strip().splitlines()) == 1 and "burrow tasks run" in err and "--force" not in err
    assert (out / "report.md").read_text() == "old" and not (out / "report.json").exists()


def test_tasks_report_reads_a_good_results_json_and_refuses_a_file(tmp_path, burrow_cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(GOOD))
    code, stdout, err = burrow_cli("tasks", "report", out)
    assert code == 0, err
    md = (out / "report.md").read_text()
    assert "| question answering | arc_easy | acc | 25.0 | 50.0 ± 10.0 |" in md and stdout
    assert "| acc_norm | 25.0 | 50.0 |" in md  # the same choices, the same chance (it showed "—")
    code, _, err = burrow_cli("tasks", "report", out / "results.json")
    assert code == 2 and err == f"error: {out / 'results.json'} is not a folder; pass the output folder (-o) of a " \
                                "`burrow tasks run`\n"


def test_wrong_paths_say_what_is_expected_and_a_damaged_passages_manifest_is_rebuilt(task_runs, task_memory,
                                                                                    task_data, tmp_path, burrow_cli):
    retro, out = task_runs["retro"], tmp_path / "new" / "o"
    common = ("-t", "arc_easy", "--data", task_data, "-o", out)
    code, _, err = burrow_cli("tasks", "run", retro, "-m", retro, *common)
    assert code == 2 and err == f"error: {retro} is a model/run directory, not a memory; pass --memory the folder " \
                                "`burrow memory build` wrote\n"
    weights = next((retro / "final").glob("*.safetensors"))
    code, _, err = burrow_cli("tasks", "run", weights, "-m", task_memory.dir, *common)
    assert code == 2 and err.startswith(f"error: {weights} is a file; pass a model directory (here: {retro / 'final'})")
    assert not (tmp_path / "new").exists()
    # the open-book passages' manifest, damaged: the passages are retrieved again (no "re-run with --force")
    cfg = tmp_path / "cfg"
    args = ("tasks", "configs", "-o", cfg, "-t", "nq_open", "-m", task_memory.dir, "--data", task_data, "--limit", "2")
    assert burrow_cli(*args)[0] == 0
    (cfg / "passages" / "nq_open.passages.manifest.json").write_text("{damaged")
    code, _, err = burrow_cli(*args)
    assert code == 0, err
    assert json.loads((cfg / "passages" / "nq_open.passages.manifest.json").read_text())["questions"] == 2


def test_a_folder_where_a_task_result_goes_is_one_error_line_before_scoring(task_runs, task_memory, task_data, tmp_path,
                                                                            burrow_cli, monkeypatch):
    from burrow.tasks.runner import TaskRun

    out = tmp_path / "o"
    (out / "per_task" / "baseline" / "arc_easy.json").mkdir(parents=True)
    monkeypatch.setattr(TaskRun, "score", lambda *a: pytest.fail("scored before the result path was checked"))
    code, _, err = burrow_cli("tasks", "run", task_runs["baseline"], "-m", task_memory.dir, "-t", "arc_easy",
                              "--data", task_data, "--limit", "2", "-o", out)
    assert code == 2 and "arc_easy.json is a folder where this task's result goes" in err and "Traceback" not in err



@pytest.mark.parametrize("limit", ["0", "-1"])
def test_configs_refuses_a_limit_below_one(limit, tmp_path, burrow_cli) -> None:
    """`tasks run --limit 0` was refused, `tasks configs --limit 0` wrote an empty passages file with its
    manifest, and `--limit -1` silently dropped the last question."""
    code, _, err = burrow_cli("tasks", "configs", "-o", tmp_path / "cfg", "--limit", limit)
    assert code == 2 and "--limit" in err and "Traceback" not in err
    assert not (tmp_path / "cfg").exists()
