"""The risk report: Weidinger et al.'s 21 risks, each measured, measured by proxy, or explained.

    from burrow.risks import RisksConfig, run_risks
    report = run_risks(["runs/x/runs/baseline", "runs/x/runs/retro"], "runs/x/memory", "out/risks",
                       RisksConfig().quick())
    report.paths["markdown"], report.errors

The taxonomy is data (``taxonomy.json``); measurements: stereotypes (CrowS-Pairs, Winogender),
toxicity (RealToxicityPrompts + an offline classifier, filtered memory), disparity (bpb by topic),
privacy (verbatim memorisation, PII patterns), retrieval copying, misinformation (TruthfulQA through
:mod:`burrow.tasks`) and the environmental footprint (:mod:`burrow.footprint`). docs/risks.md.
"""

from typing import TYPE_CHECKING

from burrow.lazy import lazy_exports

if TYPE_CHECKING:
    from burrow.risks.config import RisksConfig
    from burrow.risks.run import MEASUREMENTS, RisksReport, run_risks
    from burrow.risks.taxonomy import Risk, load_taxonomy, select

__all__ = ["MEASUREMENTS", "Risk", "RisksConfig", "RisksReport", "load_taxonomy", "run_risks", "select"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "config": ["RisksConfig"],
    "run": ["MEASUREMENTS", "RisksReport", "run_risks"],
    "taxonomy": ["Risk", "load_taxonomy", "select"],
})
