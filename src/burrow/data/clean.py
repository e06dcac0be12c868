"""Corpus cleaning as Gopher did it: quality filter, repetition filter, exact and MinHash deduplication and
test-set decontamination, streamed over a corpus.

Each document goes through the stages in order and is dropped by the first rule it fails:
quality (:mod:`burrow.data.quality`) → repetition (:mod:`burrow.data.repetition`) → exact duplicate →
decontamination → near duplicate (:mod:`burrow.data.dedup`). Kept documents are written as they come to
``OUT`` (JSONL, gzipped when the name ends in ``.gz``; fields ``text``, ``id``, ``source``, ``title``);
beside it go ``<OUT stem>.report.json`` and ``<OUT stem>.report.md``. The output is written to a
temporary file and renamed after the reports, so a killed run never leaves an output that looks complete.
Memory holds only hashes and MinHash signatures, never document texts.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import IO, Any

from burrow.artefacts import atomic_path, check_out_dir, removing_new_folders, write_json
from burrow.data.corpus import (
    JSONL_SUFFIXES,
    CorpusConfig,
    CorpusStats,
    Document,
    expand_inputs,
    no_documents,
    read_corpus,
)
from burrow.data.dedup import (
    DEDUP_RULES,
    Decontaminator,
    DedupConfig,
    MinHasher,
    NearDuplicateIndex,
    hash_of_normalised,
    normalise,
    shingles_of_normalised,
)
from burrow.data.quality import QUALITY_RULES, QualityConfig, Verdict, quality_verdict
from burrow.data.repetition import REPETITION_RULES, RepetitionConfig, repetition_verdict
from burrow.errors import BurrowError

log = logging.getLogger(__name__)

RULES = QUALITY_RULES + REPETITION_RULES + DEDUP_RULES


@dataclass
class CleanConfig:
    """What ``burrow corpus clean`` applies: the three stage configs plus rule switches and report size."""

    quality: QualityConfig = field(default_factory=QualityConfig)  # quality-filter thresholds
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)  # repetition-filter thresholds
    dedup: DedupConfig = field(default_factory=DedupConfig)  # dedup / decontamination settings
    disabled: tuple[str, ...] = ()  # rules switched off, by name (any of RULES)
    examples: int = 3  # removed documents shown per rule in the report
    snippet_chars: int = 160  # characters of each example's text shown in the report

    def __post_init__(self) -> None:
        self.disabled = tuple(self.disabled)
        unknown = [r for r in self.disabled if r not in RULES]
        if unknown:
            raise BurrowError(f"unknown rule(s) {', '.join(unknown)}; rules are: {', '.join(RULES)}")
        if self.examples < 0 or self.snippet_chars < 0:
            raise BurrowError("examples and snippet_chars must be >= 0")

    def enabled(self, rule: str) -> bool:
        """Whether ``rule`` is switched on."""
        return rule not in self.disabled


def apply_overrides(config: CleanConfig, overrides: Iterable[str]) -> CleanConfig:
    """A copy of ``config`` with ``NAME=VALUE`` threshold overrides (field names of the stage configs)."""
    stages: dict[str, Any] = {
        "quality": config.quality,
        "repetition": config.repetition,
        "dedup": config.dedup,
    }
    changed: dict[str, dict[str, object]] = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        owner = next((k for k, stage in stages.items() if name in {f.name for f in fields(stage)}), None)
        if not sep or owner is None:
            known = sorted(f.name for stage in stages.values() for f in fields(stage))
            raise BurrowError(f"bad override {item!r}: expected NAME=VALUE, NAME one of {', '.join(known)}")
        changed.setdefault(owner, {})[name] = _parse_value(name, raw.strip(), getattr(stages[owner], name))
    # each stage is rebuilt (and checked) once with all its overrides: bands and rows only make sense together
    return replace(config, **{k: replace(stage, **changed.get(k, {})) for k, stage in stages.items()})


def _parse_value(name: str, raw: str, current: object) -> object:
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(current, tuple):
            return tuple(w.strip() for w in raw.split(",") if w.strip())
        if isinstance(current, int) or (current is None and name in ("bands", "rows")):
            return int(raw)
        value = float(raw)
        if math.isnan(value):  # every comparison with NaN is False: the rule would silently never drop
            raise ValueError(raw)
        return value
    except ValueError:
        raise BurrowError(f"cannot read {raw!r} as a value for {name}") from None


class Cleaner:
    """Judges documents one at a time, in stream order, keeping the dedup state between them."""

    def __init__(self, config: CleanConfig, eval_docs: Iterable[Document] | None = None) -> None:
        self.config = config
        dedup = config.dedup
        # exact-dedup keys: of kept documents (their id), and of documents a later stage dropped (the
        # verdict), so that a copy of a contaminated document is counted as contaminated, not as a duplicate
        self._kept: dict[bytes, str] = {}
        self._dropped: dict[bytes, Verdict] = {}
        self._minhash = MinHasher(dedup.num_perm, dedup.seed)
        self._near = NearDuplicateIndex(dedup.threshold, dedup)
        self._contam = Decontaminator(eval_docs, dedup) if eval_docs is not None else None

    @property
    def eval_documents(self) -> int:
        """How many evaluation documents the decontamination index holds."""
        return len(self._contam) if self._contam is not None else 0

    def judge(self, doc: Document) -> Verdict | None:
        """The rule that drops ``doc``, or None to keep it (kept documents enter the dedup state)."""
        skip = self.config.disabled
        verdict = quality_verdict(doc.text, self.config.quality, skip)
        if verdict is None:
            verdict = repetition_verdict(doc.text, self.config.repetition, skip)
        if verdict is not None:
            return verdict
        return self._dedup_verdict(doc, skip)

    def _dedup_verdict(self, doc: Document, skip: Sequence[str]) -> Verdict | None:
        norm = normalise(doc.text)
        if "exact_duplicate" in skip:
            return self._overlap_verdict(doc, norm, skip)
        key = hash_of_normalised(norm)
        if key in self._kept:
            return Verdict("exact_duplicate", 1.0, 1.0, match=self._kept[key])
        if key in self._dropped:  # the same text as a document dropped for overlap: the same verdict
            return self._dropped[key]
        verdict = self._overlap_verdict(doc, norm, skip)
        if verdict is None:
            self._kept[key] = doc.id
        else:
            self._dropped[key] = verdict
        return verdict

    def _overlap_verdict(self, doc: Document, norm: str, skip: Sequence[str]) -> Verdict | None:
        contam_rules = {"contaminated_jaccard", "contaminated_ngram"}
        need_contam = self._contam is not None and not contam_rules <= set(skip)
        need_near = "near_duplicate" not in skip
        if not (need_contam or need_near):
            return None
        shingles = shingles_of_normalised(norm, self.config.dedup.ngram)
        minhash = self._minhash(shingles)
        if need_contam and self._contam is not None:
            verdict = self._contam.check(doc.text, shingles, minhash, skip)
            if verdict is not None:
                return verdict
        if need_near:
            found = self._near.match(minhash)
            if found is not None:
                return Verdict("near_duplicate", found[1], self._near.threshold, match=found[0])
            self._near.add(doc.id, minhash)
        return None


@dataclass
class RuleTally:
    """Documents and bytes one rule removed, with a few examples."""

    documents: int = 0
    bytes: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CleanReport:
    """What a cleaning run read, kept and removed (per rule), and how fast."""

    output: str
    inputs: list[str]
    against: list[str]
    config: dict[str, Any]
    documents_in: int = 0
    bytes_in: int = 0
    documents_kept: int = 0
    bytes_kept: int = 0
    eval_documents: int = 0
    seconds: float = 0.0
    read: dict[str, Any] = field(default_factory=dict)  # the corpus reader's CorpusStats
    removed: dict[str, RuleTally] = field(default_factory=dict)  # by rule, in RULES order

    def record(self, doc: Document, verdict: Verdict | None, examples: int, snippet_chars: int) -> None:
        """Count one judged document."""
        nbytes = len(doc.text.encode("utf-8"))
        self.documents_in += 1
        self.bytes_in += nbytes
        if verdict is None:
            self.documents_kept += 1
            self.bytes_kept += nbytes
            return
        tally = self.removed.setdefault(verdict.rule, RuleTally())
        tally.documents += 1
        tally.bytes += nbytes
        if len(tally.examples) < examples:
            snippet = " ".join(doc.text.split())[:snippet_chars]
            tally.examples.append(
                {"id": doc.id, "source": doc.source, "why": verdict.describe(), "text": snippet}
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, rules in RULES order, with throughput."""
        out = asdict(self)
        out["removed"] = {r: asdict(self.removed[r]) for r in RULES if r in self.removed}
        out["docs_per_s"] = self.documents_in / self.seconds if self.seconds else None
        out["mb_per_s"] = self.bytes_in / 1e6 / self.seconds if self.seconds else None
        return out

    def to_markdown(self) -> str:
        """A human-readable report: totals, a per-rule table, then examples per rule."""
        pct = _percent
        lines = [
            f"# Cleaning report: {self.output}",
            "",
            f"- inputs: {', '.join(self.inputs)}",
            f"- evaluation sets: {', '.join(self.against) or 'none'} ({self.eval_documents:,} documents)",
            f"- read {self.documents_in:,} documents ({self.bytes_in:,} bytes); kept {self.documents_kept:,} "
            f"({pct(self.documents_kept, self.documents_in)}) and {self.bytes_kept:,} bytes "
            f"({pct(self.bytes_kept, self.bytes_in)})",
            f"- {self.seconds:.1f} s: {self.documents_in / max(self.seconds, 1e-9):,.0f} docs/s, "
            f"{self.bytes_in / 1e6 / max(self.seconds, 1e-9):.2f} MB/s",
            "",
            "| rule | documents removed | % docs | bytes removed | % bytes |",
            "|---|---:|---:|---:|---:|",
        ]
        ordered = [(r, self.removed[r]) for r in RULES if r in self.removed]
        for rule, t in ordered:
            lines.append(
                f"| {rule} | {t.documents:,} | {pct(t.documents, self.documents_in)} | {t.bytes:,} | "
                f"{pct(t.bytes, self.bytes_in)} |"
            )
        lines += ["", "Each document is counted under the first rule it fails, in the order of the table; a copy of a "
                  "document dropped for overlap is counted under that document's rule."]
        for rule, t in ordered:
            lines += ["", f"## {rule}", ""]
            lines += [f"- `{e['id']}` ({e['source']}): {e['why']} — “{e['text']}”" for e in t.examples]
        return "\n".join(lines) + "\n"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def report_paths(output: str | Path) -> tuple[Path, Path]:
    """(Markdown, JSON) report paths: ``out.jsonl.gz`` → ``out.report.md``, ``out.report.json``."""
    output = Path(output)
    name = output.name
    for suffix in (".gz", ".jsonl", ".json", ".ndjson"):
        name = name.removesuffix(suffix)
    return output.with_name(f"{name}.report.md"), output.with_name(f"{name}.report.json")


def _open_output(tmp: Path, final: Path) -> AbstractContextManager[IO[str]]:
    if final.name.endswith(".gz"):
        return gzip.open(tmp, "wt", encoding="utf-8")
    return open(tmp, "w", encoding="utf-8")


def clean_corpus(
    inputs: Sequence[str | Path],
    output: str | Path,
    config: CleanConfig | None = None,
    corpus_config: CorpusConfig | None = None,
    against: Sequence[str | Path] = (),
    against_config: CorpusConfig | None = None,
    on_document: Callable[[Document, Verdict | None], None] | None = None,
) -> CleanReport:
    """Clean ``inputs`` into ``output`` (JSONL) with reports beside it; returns the report.

    ``against`` lists evaluation files or folders to decontaminate against (read with
    ``against_config``, default ``corpus_config``). ``on_document`` is called after each judged document
    (the CLI's progress bar).
    """
    config = config or CleanConfig()
    corpus_config = corpus_config or CorpusConfig()
    output = Path(output)
    if Path(output.name.removesuffix(".gz")).suffix.lower() not in JSONL_SUFFIXES:  # read back by its name
        raise BurrowError(f"{output}: clean writes JSON lines; give -o a name ending in .jsonl or .jsonl.gz, so "
                          "that reading it back (memory build, clean) takes it as JSONL, not as plain text")
    check_out_dir(output.parent)  # a file where the output's folder should be: refused before any work
    written = {p.resolve() for p in (output, *report_paths(output))}
    for given in expand_inputs([*inputs, *against]):
        if not given.startswith("hf:") and Path(given).resolve() in written:
            raise BurrowError(f"{given} is both an input and what clean would write; give another -o")
    eval_stats = CorpusStats()
    eval_docs = read_corpus(against, against_config or corpus_config, eval_stats) if against else None
    start = time.perf_counter()
    cleaner = Cleaner(config, eval_docs)
    if against:
        _check_against(against, eval_stats, cleaner.eval_documents)
    stats = CorpusStats()
    report = CleanReport(
        str(output), [str(p) for p in inputs], [str(p) for p in against], _config_dict(config)
    )
    report.eval_documents = cleaner.eval_documents
    with removing_new_folders(output.parent), atomic_path(output) as tmp, _open_output(tmp, output) as out:
        for doc in read_corpus(inputs, corpus_config, stats):
            verdict = cleaner.judge(doc)
            report.record(doc, verdict, config.examples, config.snippet_chars)
            if verdict is None:
                record = {"text": doc.text, "id": doc.id, "source": doc.source, "title": doc.title}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if on_document is not None:
                on_document(doc, verdict)
        out.close()
        if report.documents_in == 0:  # an empty output and "kept 0 of 0" would hide that nothing was read
            raise no_documents(inputs, stats)
        report.seconds = time.perf_counter() - start
        report.read = stats.to_dict()
        _write_reports(report)
    log.info("kept %d of %d documents -> %s", report.documents_kept, report.documents_in, output)
    return report


def _check_against(against: Sequence[str | Path], stats: CorpusStats, documents: int) -> None:
    """Decontamination must not silently become a no-op: every evaluation file must be read."""
    if documents == 0:
        raise no_documents(against, stats, "evaluation documents (--against)")
    lost = sum(stats.skipped[r] for r in ("unreadable", "bad_parquet"))
    if lost:
        raise BurrowError(f"{lost} --against file(s) in {', '.join(map(str, against))} cannot be read (see the "
                          "warnings above), so decontamination would be incomplete; fix or drop them")


def _write_reports(report: CleanReport) -> None:
    md_path, json_path = report_paths(report.output)
    write_json(json_path, report.to_dict())
    with atomic_path(md_path) as tmp:
        tmp.write_text(report.to_markdown(), encoding="utf-8")


def _config_dict(config: CleanConfig) -> dict[str, Any]:
    out = asdict(config)
    bands, rows = config.dedup.lsh(config.dedup.threshold)
    out["dedup"]["lsh_bands_rows"] = [bands, rows]
    return out
