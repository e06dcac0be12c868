"""The burrow task catalogue: what each task measures, where its file lives, how it is grouped and scored.

Each :class:`TaskSpec` names one task as ``burrow tasks run`` takes it, the files under the data
directory it reads (``../shared/data`` layout), its category in Gopher's evaluation layout, its
metrics, the score of chance and Gopher 280B's published figure where PAPERS.md gives one. The
lm-eval task configs (:mod:`burrow.tasks.configs`) and the report (:mod:`burrow.tasks.report`) are
built from this table; nothing else lists tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from burrow.errors import BurrowError

#: Gopher's categories, in the order the report shows them (Rae et al. 2021, §4 / Figure 2).
CATEGORIES = ("language modelling", "reading comprehension", "question answering", "common sense", "MMLU")


@dataclass(frozen=True)
class TaskSpec:
    """One burrow task."""

    name: str  # burrow task name (``--tasks``)
    category: str  # one of CATEGORIES
    metrics: tuple[str, ...]  # reported metrics, the first is the task's headline
    files: tuple[str, ...]  # files it reads, relative to the data directory
    chance: float | None  # the headline metric of a uniform guess (None: no such thing, e.g. bits per byte)
    output: str  # lm-eval output type: multiple_choice | loglikelihood | loglikelihood_rolling | generate_until
    num_fewshot: int = 0
    gopher: dict[str, float] = field(default_factory=dict)  # Gopher 280B, PAPERS.md §2 (fractions, bpb)
    higher_is_better: bool = True  # of the headline metric
    needs_memory: bool = False  # open-book: the memory's passages go in the prompt
    note: str = ""  # what the report says about the format


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("wikitext", "language modelling", ("bits_per_byte",), ("wikitext-2/wiki.test.raw.gz",), None,
             "loglikelihood_rolling", higher_is_better=False,
             note="WikiText-2 raw test, one document per article; bits per UTF-8 byte of the article as stored "
                  "(lm-eval's count: 3.9% more bytes than the detokenized text the model reads, so 3.8% below `burrow "
                  "eval`'s bits per byte of that text); Gopher reports WikiText-103 perplexity 7.75"),
    TaskSpec("lambada", "reading comprehension", ("acc", "perplexity"), ("lambada-openai/lambada_openai.jsonl",),
             0.0, "loglikelihood", gopher={"acc": 0.745}, note="last word, greedy (OpenAI detokenized test)"),
    TaskSpec("nq_closed", "question answering", ("exact_match",),
             ("natural-questions-subset/nq_closed_824.jsonl",), 0.0, "generate_until",
             note="824-question subset, exact match against its answer"),
    TaskSpec("nq_open", "question answering", ("exact_match",),
             ("natural-questions-subset/nq_closed_824.jsonl",), 0.0, "generate_until", needs_memory=True,
             note="the memory's top passages for the question in the prompt"),
    TaskSpec("triviaqa_closed", "question answering", ("exact_match",),
             ("triviaqa-subset/triviaqa_sm_sub_3000.jsonl",), 0.0, "generate_until",
             note="3,000-question subset, exact match against any alias"),
    TaskSpec("triviaqa_open", "question answering", ("exact_match",),
             ("triviaqa-subset/triviaqa_sm_sub_3000.jsonl",), 0.0, "generate_until", needs_memory=True,
             note="the memory's top passages for the question in the prompt"),
    TaskSpec("truthfulqa_mc1", "question answering", ("acc",), ("truthfulqa/mc_task_v0_817.json",), None,
             "multiple_choice", gopher={"acc": 0.295}, note="original 817 questions, 0-shot after the QA preamble"),
    TaskSpec("truthfulqa_mc2", "question answering", ("acc",), ("truthfulqa/mc_task_v0_817.json",), None,
             "multiple_choice", note="normalized probability mass on the true answers"),
    TaskSpec("arc_easy", "question answering", ("acc", "acc_norm"), ("arc/arc_easy_test.jsonl",), 0.25,
             "multiple_choice"),
    TaskSpec("arc_challenge", "question answering", ("acc", "acc_norm"), ("arc/arc_challenge_test.jsonl",), 0.25,
             "multiple_choice"),
    TaskSpec("piqa", "common sense", ("acc", "acc_norm"), ("piqa/piqa_validation.jsonl",), 0.5, "multiple_choice",
             gopher={"acc": 0.818}),
    TaskSpec("winogrande", "common sense", ("acc",), ("winogrande/winogrande_dev.jsonl",), 0.5, "multiple_choice",
             gopher={"acc": 0.701}, note="partial scoring: log p(continuation | each filled-in prefix)"),
    TaskSpec("mmlu", "MMLU", ("acc", "acc_stem", "acc_humanities", "acc_social_sciences", "acc_other"),
             ("mmlu/dev", "mmlu/test"), 0.25, "multiple_choice", num_fewshot=5, gopher={"acc": 0.600},
             note="57 subjects, 5-shot from dev; acc is the macro average over subjects"),
)}

#: MMLU subject -> category (stem | humanities | social_sciences | other), as in lm-evaluation-harness.
MMLU_SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem", "business_ethics": "other",
    "clinical_knowledge": "other", "college_biology": "stem", "college_chemistry": "stem",
    "college_computer_science": "stem", "college_mathematics": "stem", "college_medicine": "other",
    "college_physics": "stem", "computer_security": "stem", "conceptual_physics": "stem",
    "econometrics": "social_sciences", "electrical_engineering": "stem", "elementary_mathematics": "stem",
    "formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
    "high_school_chemistry": "stem", "high_school_computer_science": "stem",
    "high_school_european_history": "humanities", "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences", "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem", "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem", "high_school_psychology": "social_sciences", "high_school_statistics": "stem",
    "high_school_us_history": "humanities", "high_school_world_history": "humanities", "human_aging": "other",
    "human_sexuality": "social_sciences", "international_law": "humanities", "jurisprudence": "humanities",
    "logical_fallacies": "humanities", "machine_learning": "stem", "management": "other", "marketing": "other",
    "medical_genetics": "other", "miscellaneous": "other", "moral_disputes": "humanities",
    "moral_scenarios": "humanities", "nutrition": "other", "philosophy": "humanities", "prehistory": "humanities",
    "professional_accounting": "other", "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences", "us_foreign_policy": "social_sciences",
    "virology": "other", "world_religions": "humanities",
}


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``; a one-line error naming the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise BurrowError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (see `burrow tasks list`)") from None


def parse_tasks(names: list[str] | tuple[str, ...]) -> list[TaskSpec]:
    """Specs of ``names`` (comma-separated items allowed; ``all`` is every task), in the given order, once each."""
    flat = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if not flat:
        raise BurrowError("no tasks given; pass --tasks NAME (see `burrow tasks list`)")
    if "all" in flat:
        flat = list(TASKS)
    return [get_task(n) for n in dict.fromkeys(flat)]


def lm_eval_names(spec: TaskSpec) -> list[str]:
    """The lm-eval task names that make up burrow task ``spec`` (MMLU: one per subject)."""
    if spec.name == "mmlu":
        return [f"burrow_mmlu_{s}" for s in MMLU_SUBJECTS]
    return [f"burrow_{spec.name}"]
