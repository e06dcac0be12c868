"""Each measurement's arithmetic on fixtures whose answer is known."""

from __future__ import annotations

import json
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from burrow.errors import BurrowError
from burrow.risks import disparity, misinformation, privacy, stereotypes, toxicity
from burrow.risks.classifier import make_scorer, offline_scorer, perspective_scorer


def by_length(texts):
    """A scorer that prefers shorter texts: ln p = −len."""
    return -np.array([len(t) for t in texts], dtype=float)


def test_crows_pairs_share_by_type(data_dir: Path) -> None:
    rows = stereotypes.read_crows(data_dir)
    overall, groups = stereotypes.crows_pairs(rows, by_length)
    # sent_more is shorter in pairs 0 (equal length: not preferred), 1, 2? — count by hand:
    expect = [len(r["sent_more"]) < len(r["sent_less"]) for r in rows]
    assert overall.value == pytest.approx(sum(expect) / 4) and overall.n == 4
    assert groups["gender"].n == 2 and 0 <= groups["gender"].low <= groups["gender"].value <= groups["gender"].high


def test_winogender_male_share_and_correlation(data_dir: Path) -> None:
    pairs, stats = stereotypes.read_winogender(data_dir)
    assert len(pairs) == 4 and stats["nurse"] == 90.0

    def prefers_he_for_engineers(texts):
        return np.array([1.0 if (" he " in t) == ("engineer" in t) else 0.0 for t in texts])

    male, r, per_occ = stereotypes.winogender(pairs, stats, prefers_he_for_engineers, samples=50)
    assert male.value == 0.5
    assert per_occ == {"engineer": 1.0, "nurse": -1.0}
    assert r.value == pytest.approx(-1.0)  # the preference follows the occupation's gender statistics exactly


def test_missing_data_file_is_one_line(data_dir: Path) -> None:
    (data_dir / "crows-pairs" / "crows_pairs_anonymized.csv").unlink()
    with pytest.raises(BurrowError, match="crows_pairs_anonymized.csv is missing"):
        stereotypes.read_crows(data_dir)


def test_toxicity_figures_known() -> None:
    scores = np.array([[0.1, 0.9, 0.2], [0.1, 0.2, 0.3], [0.6, 0.0, 0.0], [0.0, 0.0, 0.1]])
    emt, prob = toxicity.toxicity_figures(scores, 0.5, samples=100)
    assert emt.value == pytest.approx((0.9 + 0.3 + 0.6 + 0.1) / 4)
    assert prob.value == 0.5 and prob.n == 4


def test_offline_classifier_separates_abuse() -> None:
    p = offline_scorer()(["You stupid fucking idiot, shut up.", "The cat sleeps in the sun."])
    assert p[0] > 0.5 > p[1]


class _Perspective(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        value = 0.9 if "bad" in body["comment"]["text"] else 0.1
        reply = json.dumps({"attributeScores": {"TOXICITY": {"summaryScore": {"value": value}}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def test_perspective_compatible_scorer() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Perspective)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1alpha1/comments:analyze"
        assert perspective_scorer(url)(["a bad word", "fine"]).tolist() == [0.9, 0.1]
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(BurrowError, match="did not answer"):
        perspective_scorer(url, timeout=2)(["x"])
    with pytest.raises(BurrowError, match="did not answer"):
        make_scorer(url)  # asked once before any sample is generated
    with pytest.raises(BurrowError, match="--scorer must be the http:// or https:// URL"):
        perspective_scorer("notaurl")


def test_filtered_memory_drops_toxic_neighbours(risk_memory) -> None:
    from burrow.risks.filtered import FilteredMemory

    query = "You stupid fucking idiot, shut the fuck up"
    plain = risk_memory.search([query], k=2)
    assert any("fuck" in t for t in plain.texts[0])  # the rant is the nearest chunk
    filtered = FilteredMemory(risk_memory, offline_scorer(), 0.5, overfetch=4)
    res = filtered.search([query], k=2)
    assert res.texts[0] and not any("fuck" in t for t in res.texts[0])
    assert filtered.stats()["dropped"] >= 1 and filtered.stats()["chunks_flagged"] >= 1


def test_pii_patterns() -> None:
    assert privacy.pii_counts("mail a.b@example.org or +1 555-123-4567, not 2021-2022 or 3.14") == 2
    assert privacy.pii_counts("(555) 123-4567 and x@y") == 1


def test_verbatim_and_copied_tokens() -> None:
    samples = [{"prompt": 0, "tokens": [1, 2, 3, 4]}, {"prompt": 1, "tokens": [5, 6, 0, 0]}]
    hits, lengths = privacy.verbatim(samples, [[1, 2, 3, 4], [5, 6, 7, 8]], n=4)
    assert hits == 1 and lengths.tolist() == [4, 2]
    chunk = {"tokens": list(range(10)), "copied": {"tokens": 8, "rank": 2},
             "neighbours": [{"rank": 1, "doc_id": "a.txt#1"}, {"rank": 2, "doc_id": "b.jsonl#7"}]}
    plain = {"tokens": list(range(10)), "copied": None, "neighbours": [{"rank": 1, "doc_id": "a.txt#1"}]}
    first = {"tokens": [1, 2], "copied": None, "neighbours": []}  # no retrieval yet: not counted
    samples = [{"chunks": [chunk, plain, first]}, {"chunks": []}]
    copied, total, by_source = privacy.copied_tokens(samples, privacy.corpus_file)
    assert copied.tolist() == [8, 0] and total.tolist() == [20, 0] and by_source["b.jsonl"].tolist() == [8, 0]


def test_topic_gap_known() -> None:
    bits = np.array([10.0, 10.0, 30.0, 30.0])
    nbytes = np.array([10.0, 10.0, 10.0, 10.0])
    per, gap = disparity.topic_gap(bits, nbytes, np.array(["a", "a", "b", "b"]), samples=50)
    assert per["a"].value == 1.0 and per["b"].value == 3.0 and gap.value == 2.0
    assert gap.low == gap.high == 2.0  # identical documents within a topic: no resampling spread


CONTRACT = {"models": {"base": {"truthfulqa_mc1": {"acc": 0.25, "acc_stderr": 0.05, "n": 100},
                                "truthfulqa_mc2": {"acc": 0.4, "acc_stderr": 0.02, "n": 100}},
                       "retro[ON]": {"truthfulqa_mc1": {"acc": 0.3, "acc_stderr": 0.05, "n": 100}}},
            "tasks": {"truthfulqa_mc1": {"category": "truthfulness", "metrics": ["acc"], "chance": 0.227},
                      "truthfulqa_mc2": {"category": "truthfulness", "metrics": ["acc"], "chance": None}}}


def test_truthfulqa_from_contract_results() -> None:
    mc1, mc2 = misinformation.truthfulqa(CONTRACT)
    assert [v.model for v in mc1.values] == ["base", "retro[ON]"] and mc1.reference == "chance 0.227"
    assert mc1.values[0].low == pytest.approx(0.25 - 1.96 * 0.05, abs=1e-3)
    assert [v.model for v in mc2.values] == ["base"]
    with pytest.raises(BurrowError, match="not a tasks results.json"):
        misinformation.truthfulqa({"rows": []})


def test_misinformation_calls_run_tasks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from burrow.risks.config import RisksConfig
    from burrow.risks.context import Context

    calls = []

    def run_tasks(models, tasks, out, memory=None, data_dir=None, limit=None):
        calls.append((models, tasks, limit))
        return CONTRACT

    monkeypatch.setitem(sys.modules, "burrow.tasks", types.SimpleNamespace(run_tasks=run_tasks))
    ctx = Context(RisksConfig(tasks_limit=7), tmp_path, [Path("runs/a")], None)
    outcome = misinformation.measure_misinformation(ctx)
    assert calls == [(["runs/a"], ["truthfulqa_mc1", "truthfulqa_mc2"], 7)]
    assert outcome.measurements[0].values[1].value == 0.3 and (tmp_path / "misinformation.png").is_file()


def test_misinformation_without_the_suite_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from burrow.risks.config import RisksConfig
    from burrow.risks.context import Context

    monkeypatch.setitem(sys.modules, "burrow.tasks", None)  # import fails
    ctx = Context(RisksConfig(), tmp_path, [Path("runs/a")], None)
    with pytest.raises(BurrowError, match="--tasks-results"):
        misinformation.measure_misinformation(ctx)


def test_text_logprobs_equal_a_hand_computation(tmp_path: Path, risk_memory, risk_models) -> None:
    """The sentence scorer (burrow.evaluate underneath) gives ln p(text) = Σ log-softmax of the model's
    own logits on [pad]·(m−1) + [s] + tokens, computed here by hand, in fp32."""
    import torch

    from burrow.data.layout import prefix, start_token
    from burrow.model.io import load_named_model
    from burrow.risks.config import RisksConfig
    from burrow.risks.context import Context, load_arms
    from burrow.risks.scoring import text_logprobs

    ctx = Context(RisksConfig(precision="fp32", device="cpu"), tmp_path, [risk_models["retro"]], risk_memory.dir)
    load_arms(ctx)
    text = "Owls hunt at night, turning their heads."
    got = text_logprobs(ctx, ctx.arms[0], [text, text + " More."])
    tok = risk_memory.tokenizer
    ids = tok.encode(text)
    x = prefix(8, start_token(tok), tok.pad_id) + ids[:-1]
    model = load_named_model(risk_models["retro"])[1].eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([x])).float(), -1)[0]
    want = float(sum(logp[7 + i, t] for i, t in enumerate(ids)))
    assert got[0] == pytest.approx(want, rel=1e-4)
    assert got[1] < got[0]  # a longer text is less likely
