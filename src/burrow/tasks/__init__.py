"""Gopher's evaluation suite for burrow models, inside lm-evaluation-harness (floor 5).

    from pathlib import Path
    from burrow.tasks import run_tasks
    results = run_tasks(["runs/baseline", "runs/retro", "smollm2"], ["arc_easy", "truthfulqa_mc1"],
                        Path("out/tasks"), memory=Path("memory"), limit=100)

* :mod:`~burrow.tasks.catalog`: the tasks (category, metrics, chance, Gopher 280B's figure);
* :mod:`~burrow.tasks.datasets` / :mod:`~burrow.tasks.configs`: offline lm-eval task configs over the data folder;
* :mod:`~burrow.tasks.harness_lm`: :class:`BurrowEvalLM`, burrow's lm-eval model (``lm_eval --model burrow``
  through ``python -m burrow.tasks.harness``);
* :mod:`~burrow.tasks.runner`: :func:`run_tasks`, per-task resumable results; :mod:`~burrow.tasks.report`.
"""

from typing import TYPE_CHECKING

from burrow.lazy import lazy_exports
from burrow.tasks.catalog import CATEGORIES, MMLU_SUBJECTS, TASKS, TaskSpec, get_task, parse_tasks
from burrow.tasks.config import LMConfig, TasksConfig

if TYPE_CHECKING:
    from burrow.tasks.harness_lm import BurrowEvalLM
    from burrow.tasks.models import MODEL_NAME, OpenModel, load_lm, open_model, register
    from burrow.tasks.runner import run_tasks

__all__ = ["CATEGORIES", "MMLU_SUBJECTS", "MODEL_NAME", "TASKS", "BurrowEvalLM", "LMConfig", "OpenModel", "TaskSpec",
           "TasksConfig", "get_task", "load_lm", "open_model", "parse_tasks", "register", "run_tasks"]

#: Names whose modules import lm-evaluation-harness (~0.35 s) load on first use: every `burrow` command that
#: reads TasksConfig for `burrow tasks`' options would otherwise pay for it.
__getattr__, __dir__ = lazy_exports(__name__, {
    "harness_lm": ["BurrowEvalLM"],
    "models": ["MODEL_NAME", "OpenModel", "load_lm", "open_model", "register"],
    "runner": ["run_tasks"],
})
