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
from burrow.risks.config import RisksConfig


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
    # Sentences of one occupation are not independent: two occupations that disagree span [0, 1], wider than
    # the Wilson interval over the 4 sentences (≈ [0.15, 0.85]).
    assert male.low == 0.0 and male.high == 1.0
    assert per_occ == {"engineer": 1.0, "nurse": -1.0}
    assert r.value == pytest.approx(-1.0)  # the preference follows the occupation's gender statistics exactly


def test_the_stereotype_rows_count_the_data_they_read(tmp_path: Path, data_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The measurement's data line counts the pairs and occupations of the files read, not the full sets'."""
    from burrow.risks.context import Arm, Context

    def score(texts):  # ln p: a nurse's sentences twice as long (so occupations differ and r is defined)
        return -np.array([len(t) * (1.0 + ("nurse" in t)) for t in texts])

    monkeypatch.setattr(stereotypes, "scorer_for", lambda ctx, arm: score)
    ctx = Context(RisksConfig(data_dir=data_dir, bootstrap=20), tmp_path, [], None)
    ctx.arms.append(Arm("base", tmp_path, None, "baseline"))  # type: ignore[arg-type]
    crows, male, corr = stereotypes.measure_stereotypes(ctx).measurements
    assert crows.data == "CrowS-Pairs, 4 pairs"
    assert male.data == "Winogender, 4 sentence pairs (2 occupations)" and corr.data == "Winogender, 2 occupations"


def test_missing_data_file_is_one_line(data_dir: Path) -> None:
    (data_dir / "crows-pairs" / "crows_pairs_anonymized.csv").unlink()
    with pytest.raises(BurrowError, match="crows_pairs_anonymized.csv is missing"):
        stereotypes.read_crows(data_dir)


@pytest.mark.parametrize(("rel", "content", "read", "words"), [
    ("crows-pairs/crows_pairs_anonymized.csv", b"\xff\xfe not text", lambda d: stereotypes.read_crows(d), "UTF-8"),
    ("crows-pairs/crows_pairs_anonymized.csv", b"a,b\n1,2\n", lambda d: stereotypes.read_crows(d), "sent_more"),
    ("crows-pairs/crows_pairs_anonymized.csv", b",sent_more,sent_less,stereo_antistereo,bias_type\n",
     lambda d: stereotypes.read_crows(d), "no rows"),
    ("crows-pairs/crows_pairs_anonymized.csv", b",sent_more,sent_less,stereo_antistereo,bias_type\n0,,B.,stereo,age\n",
     lambda d: stereotypes.read_crows(d), "line 2 .*sent_more"),
    ("winogender/all_sentences.tsv", b"sentid\tsentence\nnurse\tThe nurse.\n",
     lambda d: stereotypes.read_winogender(d), "line 2"),
    ("winogender/occupations-stats.tsv", b"occupation\tbls_pct_female\nnurse\tmany\n",
     lambda d: stereotypes.read_winogender(d), "line 2"),
    ("realtoxicityprompts-sample/nontoxic_1200.jsonl", b"{not json\n", lambda d: toxicity.read_prompts(d, 4),
     "line 1"),
    ("realtoxicityprompts-sample/nontoxic_1200.jsonl", b"[1]\n", lambda d: toxicity.read_prompts(d, 4), "line 1"),
    ("realtoxicityprompts-sample/nontoxic_1200.jsonl", b"", lambda d: toxicity.read_prompts(d, 4), "no rows"),
    ("wikipedia-vital-summaries/summaries_en.jsonl.gz", b"plain text", lambda d: disparity.read_leads(d, 2), "gzip"),
])
def test_a_damaged_data_file_is_one_line_naming_it(data_dir: Path, rel: str, content: bytes, read, words: str) -> None:
    """Not UTF-8, not JSON or gzip, a missing column, a malformed row, no rows: a BurrowError naming the file
    (the row then says why it was not measured), never a traceback out of `burrow risks`."""
    (data_dir / rel).write_bytes(content)
    with pytest.raises(BurrowError, match=words) as e:
        read(data_dir)
    assert str(data_dir / rel) in str(e.value) and "\n" not in str(e.value)


def test_the_default_data_folder_is_found_as_the_other_commands_find_it(tmp_path: Path, data_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --data-dir or $BURROW_DATA, the data is ../shared/data beside the working directory (as `burrow
    tasks` and the demo find it), not one machine's absolute path."""
    import shutil

    data = tmp_path / "shared" / "data"
    data.parent.mkdir()
    shutil.move(data_dir, data)
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    monkeypatch.delenv("BURROW_DATA", raising=False)
    assert RisksConfig().data_dir == data.resolve()
    monkeypatch.setenv("BURROW_DATA", str(tmp_path / "elsewhere"))
    assert RisksConfig().data_dir == tmp_path / "elsewhere"


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


def test_a_scorer_that_does_not_speak_http_is_one_error() -> None:
    """A port that answers something else (http.client.BadStatusLine, not an OSError) is one error line."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1alpha1/comments:analyze?key=SECRET"
        with pytest.raises(BurrowError, match="did not answer") as e:
            perspective_scorer(url, timeout=5)(["x"])
        assert "SECRET" not in str(e.value)
    finally:
        listener.close()


def test_the_fingerprint_follows_the_data_and_the_tasks_results(tmp_path: Path, data_dir: Path) -> None:
    """A changed data file or --tasks-results file is measured again, never served from an old part."""
    import os

    from burrow.risks.context import Context

    results = tmp_path / "results.json"
    results.write_text("{}", encoding="utf-8")
    config = RisksConfig(data_dir=data_dir, tasks_results=results)

    def fingerprint() -> str:
        return Context(config, tmp_path, [], None).fingerprint()

    first = fingerprint()
    assert fingerprint() == first
    results.write_text('{"models": {}}', encoding="utf-8")
    second = fingerprint()
    assert second != first
    tsv = next(data_dir.rglob("*.tsv"))
    os.utime(tsv, ns=(tsv.stat().st_atime_ns, tsv.stat().st_mtime_ns + 10**9))
    assert fingerprint() != second


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


def test_the_topic_gap_is_read_against_shuffled_topics() -> None:
    """Topics drawn alike still show a gap whose bootstrap interval excludes 0; the permutation null says so."""
    rng = np.random.default_rng(0)
    topics = np.repeat([f"t{i}" for i in range(11)], 8)
    nbytes = rng.integers(300, 900, size=len(topics)).astype(np.float64)
    bits = nbytes * rng.normal(3.0, 0.3, size=len(topics))
    _, gap = disparity.topic_gap(bits, nbytes, topics, samples=300)
    assert gap.low > 0  # the bias the null corrects for
    median, p = disparity.shuffled_gap(bits, nbytes, topics, samples=300)
    assert p > 0.05 and 0.5 * gap.value < median < 2 * gap.value
    bits[topics == "t3"] *= 1.5  # one topic really is harder
    median, p = disparity.shuffled_gap(bits, nbytes, topics, samples=300)
    assert p < 0.01 and median < 0.5 * disparity.topic_gap(bits, nbytes, topics, samples=50)[1].value


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
    for bad in ({"models": {"b": {"truthfulqa_mc1": {"acc": None}}}}, {"models": {"b": [1, 2]}},
                {"models": {"b": {"truthfulqa_mc1": {"acc": 0.2}}}, "tasks": {"truthfulqa_mc1": {"chance": "x"}}}):
        with pytest.raises(BurrowError, match="malformed truthfulqa_mc1 entry"):
            misinformation.truthfulqa(bad)


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "[]"])
def test_a_tasks_results_file_that_is_not_an_object_is_one_line(tmp_path: Path, content: str) -> None:
    """--tasks-results holding JSON but not an object (a list, a string) names the file, never a traceback."""
    from burrow.risks.context import Context

    results = tmp_path / "results.json"
    results.write_text(content, encoding="utf-8")
    ctx = Context(RisksConfig(tasks_results=results), tmp_path, [], None)
    with pytest.raises(BurrowError, match="is not a tasks results.json") as e:
        misinformation.measure_misinformation(ctx)
    assert str(results) in str(e.value)


def test_misinformation_calls_run_tasks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from burrow.risks.config import RisksConfig
    from burrow.risks.context import Context
    from burrow.tasks.config import LMConfig, TasksConfig

    calls = []

    def run_tasks(models, tasks, out, memory=None, data_dir=None, limit=None, config=None):
        calls.append((models, tasks, limit, config.lm.device, config.lm.precision, config.progress))
        return CONTRACT

    tasks = types.SimpleNamespace(run_tasks=run_tasks, LMConfig=LMConfig, TasksConfig=TasksConfig)
    monkeypatch.setitem(sys.modules, "burrow.tasks", tasks)
    # `risks --device cpu --precision fp32 --no-progress`: TruthfulQA ran on the default device and autocast
    config = RisksConfig(tasks_limit=7, device="cpu", precision="fp32", progress=False)
    ctx = Context(config, tmp_path, [Path("runs/a")], None)
    outcome = misinformation.measure_misinformation(ctx)
    assert calls == [(["runs/a"], ["truthfulqa_mc1", "truthfulqa_mc2"], 7, "cpu", "fp32", False)]
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


def test_energy_of_calls_that_recorded_none_is_a_lower_bound(tmp_path: Path, data_dir: Path) -> None:
    """A stage whose calls partly recorded no energy says its energy is a lower bound (they count as 0)."""
    from burrow.risks import run_risks

    run = tmp_path / "run"
    run.mkdir()
    calls = [{"stage": "train", "seconds": 10.0, "energy_kwh": 0.002, "emissions_kg": 0.001, "flops": 1e12},
             {"stage": "train", "seconds": 5.0, "energy_kwh": None, "emissions_kg": None, "flops": 5e11}]
    (run / "footprint.json").write_text(json.dumps({"kind": "footprint", "calls": calls}), encoding="utf-8")
    config = RisksConfig(risks=("environmental",), data_dir=data_dir, footprint_dirs=(run,), progress=False)
    report = run_risks([], None, tmp_path / "out", config)
    row = next(r for r in report.rows if r["id"] == "environmental")
    assert any("1 of 2 calls recorded no energy" in n and "lower bounds" in n for n in row["notes"]), row["notes"]
