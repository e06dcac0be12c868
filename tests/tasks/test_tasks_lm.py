"""burrow's lm-eval model: rows in the chunk layout, batching that changes nothing, retrieval once per chunk."""

from __future__ import annotations

import math

import pytest
import torch


def _lm(task_runs, task_memory, name: str, mode: str, batch_tokens: int = 4096):
    from burrow.tasks import LMConfig, open_model

    return open_model(str(task_runs[name]), task_memory).lm(mode, LMConfig(device="cpu", precision="fp32",
                                                                           batch_tokens=batch_tokens))


class _Req:
    def __init__(self, *args):
        self.args = args


def test_layout_row_scores_the_continuation_after_the_document_start():
    from burrow.tasks.rows import layout_row

    head = [0, 0, 0, 9]  # m = 4: three pads, then s
    row = layout_row(head, [1, 2, 3, 4, 5], n_score=2, max_len=100, m=4)
    assert row.tokens == [0, 0, 0, 9, 1, 2, 3, 4] and row.targets[3:] == [1, 2, 3, 4, 5]
    assert row.tokens[row.score_from:] == [3, 4] and row.targets[row.score_from:] == [4, 5]
    cut = layout_row(head, list(range(1, 21)), n_score=2, max_len=10, m=4)  # cut on a chunk boundary
    assert len(cut.tokens) <= 10 and (len(head) + 19 - len(cut.tokens)) % 4 == 0 and not cut.doc_start
    assert cut.targets[cut.score_from:] == [19, 20]


def test_loglikelihood_matches_a_hand_computation_and_batching_changes_nothing(task_runs, task_memory):
    lm = _lm(task_runs, task_memory, "retro", "on", batch_tokens=10_000)
    pairs = [("Owls hunt at night, turning their heads", " to hear"), ("Bread is baked", " from flour"),
             ("Chess is a board game for two players. Each player moves sixteen", " pieces")]
    batched = lm.loglikelihood([_Req(c, x) for c, x in pairs], disable_tqdm=True)
    single = [lm.loglikelihood([_Req(c, x)], disable_tqdm=True)[0] for c, x in pairs]
    for (a, ga), (b, gb) in zip(batched, single, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    # by hand, RETRO[OFF]: the model over [pad]*(m-1) + [s] + doc[:-1], the continuation's log-probs summed
    off = _lm(task_runs, task_memory, "retro", "off")
    b = off.backend
    ctx, cont = b.encode("Bread is baked"), b.encode("Bread is baked from flour")[len(b.encode("Bread is baked")):]
    x = torch.tensor([b.head() + ctx + cont[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(b.model(x).float(), -1)[0]
    start = len(b.head()) - 1 + len(ctx)
    want = sum(float(logp[start + i, t]) for i, t in enumerate(cont))
    assert math.isclose(off.loglikelihood([_Req(*pairs[1])], disable_tqdm=True)[0][0], want, abs_tol=1e-4)


def test_retro_on_retrieves_once_per_distinct_chunk_and_changes_scores(task_runs, task_memory):
    on, off = _lm(task_runs, task_memory, "retro", "on"), _lm(task_runs, task_memory, "retro", "off")
    context = "A volcano is a rupture in the crust where lava, ash and gases escape. Mount Etna in Sicily erupts"
    reqs = [_Req(context, f" {w}") for w in ("often", "rarely", "never", "daily")]
    s_on = on.loglikelihood(reqs, disable_tqdm=True)
    s_off = off.loglikelihood(reqs, disable_tqdm=True)
    ctx = on.tok_encode(context)
    rows = [on._pair_row(context, ctx, on.tok_encode(context + r.args[1])[len(ctx):]) for r in reqs]
    from burrow.tasks.rows import query_chunks

    distinct = {tuple(c) for row in rows for _, c in query_chunks(row, 8)}
    assert 0 < on.neighbours.searched == len(distinct) < sum(len(r.tokens) for r in rows)  # per chunk, not per token
    assert off.neighbours is None
    assert any(abs(a[0] - b[0]) > 1e-4 for a, b in zip(s_on, s_off, strict=True))


def test_rolling_scores_every_token_once(task_runs, task_memory):
    lm = _lm(task_runs, task_memory, "baseline", "baseline")
    text = " ".join(["Owls hunt at night, turning their heads to hear the smallest mouse in the grass."] * 12)
    ids = lm.tok_encode(text)
    rows = lm._rolling_rows(ids)
    assert len(rows) > 1 and sum(len(r.tokens) - r.score_from for r in rows) == len(ids)
    total = lm.loglikelihood_rolling([_Req(text)], disable_tqdm=True)[0]
    assert total < 0 and math.isfinite(total)


def test_generate_until_stops_at_the_stop_string(task_runs, task_memory):
    lm = _lm(task_runs, task_memory, "retro", "on")
    out = lm.generate_until([_Req("Question: Which volcano erupts often?\nAnswer:",
                                  {"until": ["\n", "."], "max_gen_toks": 8})], disable_tqdm=True)
    assert len(out) == 1 and "\n" not in out[0] and "." not in out[0]


def test_an_hf_tokenizer_that_adds_bos_gets_it_as_in_lm_evals_hf_backend():
    """lm-eval 0.4.13's ``hf`` encodes with the tokenizer's default special tokens (a Llama tokenizer's bos before
    every context), except when the text already starts with bos; so does burrow's HF backend."""
    from types import SimpleNamespace

    from burrow.tasks.backends import HFBackend

    class Tok:  # a Llama-style tokenizer: bos (1) before every encoding by default
        bos_token, bos_token_id, eos_token_id, pad_token_id = "<s>", 1, 2, None

        def __call__(self, text, add_special_tokens=True):
            ids = [10 + ord(c) % 50 for c in text.removeprefix("<s>")]
            return {"input_ids": ([1] if add_special_tokens or text.startswith("<s>") else []) + ids}

    tok = Tok()
    lm = SimpleNamespace(max_length=64, start_id=1, tokenizer=tok,
                         encode=lambda text: tok(text, add_special_tokens=False)["input_ids"],
                         module=SimpleNamespace(forward=lambda input_ids: None))
    backend = HFBackend(lm)  # type: ignore[arg-type]
    assert backend.encode("ab") == [1, 10 + ord("a") % 50, 10 + ord("b") % 50]
    assert backend.encode("ab", add_special_tokens=False) == [10 + ord("a") % 50, 10 + ord("b") % 50]
    assert backend.encode("<s>ab")[:2] == [1, 10 + ord("a") % 50]  # no second bos


def test_two_retro_models_of_one_name_keep_their_on_off_pairs(task_runs, task_memory, tmp_path):
    """a/retro and b/retro: the second is retro'[OFF] / retro'[ON], so the report finds both pairs."""
    import shutil

    from burrow.tasks.report import retro_pairs
    from burrow.tasks.runner import _plan

    for parent in ("a", "b"):
        shutil.copytree(task_runs["retro"], tmp_path / parent / "retro")
    jobs = _plan([str(tmp_path / "a" / "retro"), str(tmp_path / "b" / "retro")], task_memory)
    labels = [j.label for j in jobs]
    assert labels == ["retro[OFF]", "retro[ON]", "retro'[OFF]", "retro'[ON]"]
    assert [p[0] for p in retro_pairs(labels)] == ["retro", "retro'"]
