"""The taxonomy is complete data (6 areas, 21 risks) and every report row says something."""

from __future__ import annotations

import pytest

from burrow.errors import BurrowError
from burrow.risks import taxonomy
from burrow.risks.report import build_rows, headline, markdown
from burrow.risks.results import Measurement, Outcome, Value


def test_six_areas_twentyone_risks_each_assessed() -> None:
    risks = taxonomy.load_taxonomy()
    assert len(risks) == 21 and len(taxonomy.areas()) == 6
    assert [r.area for r in risks].count("IV") == 4  # malicious uses: risks 11-14
    for r in risks:
        assert r.description and r.name
        assert r.measure is not None or (r.why and r.how), r.id
        if r.measure is not None:
            assert r.measure in __import__("burrow.risks", fromlist=["MEASUREMENTS"]).MEASUREMENTS


#: The 21 risks as PAPERS.md §3 names them (Weidinger et al. 2021), in order.
PAPER_NAMES = [
    "Social stereotypes and unfair discrimination", "Exclusionary norms", "Toxic language",
    "Lower performance for some languages and social groups",
    "Compromising privacy by leaking private information",
    "Compromising privacy by correctly inferring private information",
    "Risks from leaking or correctly inferring sensitive information",
    "Disseminating false or misleading information",
    "Causing material harm by disseminating false or poor information e.g. in medicine or law",
    "Leading users to perform unethical or illegal actions", "Making disinformation cheaper and more effective",
    "Facilitating fraud, scams and more targeted manipulation",
    "Assisting code generation for cyber attacks, weapons, or malicious use",
    "Illegitimate surveillance and censorship",
    "Anthropomorphising systems can lead to overreliance or unsafe use",
    "Creating avenues for exploiting user trust, nudging or manipulation",
    "Promoting harmful stereotypes by implying gender or ethnic identity", "Environmental harms from operating LMs",
    "Increasing inequality and negative effects on job quality", "Undermining creative economies",
    "Disparate access to benefits due to hardware, software, skill constraints",
]


def test_the_rows_carry_the_papers_names_and_areas() -> None:
    """Risk.name is "the paper's name of the risk": the report's rows name each risk as the paper does."""
    risks = taxonomy.load_taxonomy()
    assert [r.name for r in risks] == PAPER_NAMES
    assert [r.area for r in risks] == ["I"] * 4 + ["II"] * 3 + ["III"] * 3 + ["IV"] * 4 + ["V"] * 3 + ["VI"] * 4


def test_select_by_id_or_number_and_unknown_is_one_line() -> None:
    assert [r.number for r in taxonomy.select(["toxic-language", "18"])] == [3, 18]
    with pytest.raises(BurrowError, match="unknown risk id 'nope'") as e:
        taxonomy.select(["nope"])
    assert "\n" not in str(e.value)


def test_rows_are_never_blank() -> None:
    risks = list(taxonomy.load_taxonomy())
    m = Measurement("crows-pairs", "CrowS", "share", "fixture", [Value("base", 0.6, 0.5, 0.7, 10)])
    outcomes = {"stereotypes": Outcome([m]), "toxicity": BurrowError("data file x is missing")}
    rows = build_rows(risks, outcomes)
    assert len(rows) == 21
    status = {r["id"]: r["status"] for r in rows}
    assert status["stereotypes"] == "measured"
    assert status["toxic-language"] == "not measured" and "missing" in rows[2]["why"]
    assert status["exclusionary-norms"] == "not measured"  # its part (winogender) is absent from the outcome
    assert status["fraud"] == "not automatically measurable"
    assert all(headline(r) for r in rows)
    doc = {"rows": rows, "models": ["base"], "memory": None, "summary": {"measured": 1}, "problems": [],
           "taxonomy": "t"}
    md = markdown(doc)
    assert md.count("\n| ") >= 22 and "0.600 [0.500, 0.700]" in md
