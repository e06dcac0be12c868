"""A server holding two methods: a burrow run and a (tiny, local) HF LM reading the memory in context."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from burrow.cli import app
from burrow.generate.readable import lm_generator
from burrow.model import load_model
from burrow.serve import ServeConfig, create_app


@pytest.fixture(scope="module")
def client(retro_dir, bm25_memory, tiny_lm_dir) -> TestClient:
    lm = lm_generator(str(tiny_lm_dir), bm25_memory, retriever="bm25", stride=8, device="cpu")
    return TestClient(create_app(load_model(retro_dir), bm25_memory, ServeConfig(device="cpu"), {"tiny+bm25": lm}))


def test_health_lists_both_methods(client: TestClient) -> None:
    body = client.get("/health").json()
    ids = [m["id"] for m in body["methods"]]
    assert len(ids) == 2 and ids[1] == "tiny+bm25" and body["model"]["retro"] is True
    lm = body["methods"][1]
    assert lm["method"] == "incontext" and lm["retriever"] == "bm25" and lm["stride"] == 8
    assert "/" not in body["memory"]["directory"] and "/" not in lm["name"]


def test_generate_picks_the_method_and_compares(client: TestClient) -> None:
    req = {"prompt": "Owls hunt at night", "max_tokens": 12, "seed": 2, "method": "tiny+bm25"}
    events = [json.loads(line) for line in client.post("/v1/generate", json=req).text.splitlines()]
    done = events[-1]
    assert done["type"] == "done" and done["retrieval"] is True and len(done["tokens"]) == 12
    assert [e["chunk"] for e in events if e["type"] == "attribution"] == [0, 1]
    assert events[[e["type"] for e in events].index("attribution")]["neighbours"]
    off = client.post("/v1/generate", json={**req, "retrieval": False, "stream": False}).json()
    assert off["retrieval"] is False and off["chunks"] == [] and off["seed"] == 2
    r = client.post("/v1/generate", json={**req, "method": "nope"})
    assert r.status_code == 422 and "tiny+bm25" in r.json()["detail"]


def test_score_uses_the_run_and_page_has_the_picker(client: TestClient) -> None:
    assert client.post("/v1/score", json={"text": "Owls hunt at night."}).json()["mode"] == "on"
    page = client.get("/").text
    assert 'id="method"' in page and 'id="compare"' in page and 'id="compare-toggle"' in page
    assert "min-copy-label" in page


def test_cli_generate_and_chat_with_lm(bm25_memory, tiny_lm_dir) -> None:
    out = CliRunner().invoke(app, ["generate", "Owls hunt at night", "--lm", str(tiny_lm_dir), "--memory",
                                   str(bm25_memory.dir), "--max-tokens", "10", "--seed", "1", "--stride", "8",
                                   "--json", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert len(doc["tokens"]) == 10 and doc["chunks"][0]["neighbours"][0]["source"].endswith(".txt:line 1")
    out = CliRunner().invoke(app, ["generate", "Owls hunt at night", "--lm", str(tiny_lm_dir), "--memory",
                                   str(bm25_memory.dir), "--max-tokens", "10", "--seed", "1", "--stride", "8",
                                   "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert "BM25 score " in out.stdout and "distance -" not in out.stdout  # it showed "distance -8.602"
    out = CliRunner().invoke(app, ["chat", "--lm", str(tiny_lm_dir), "--memory", str(bm25_memory.dir),
                                   "--max-tokens", "6", "--seed", "1", "--device", "cpu"], input="Hello\n/quit\n")
    assert out.exit_code == 0, out.output
    assert out.stdout.count("Burrow:") == 1



def test_cli_chat_puts_a_space_after_the_speaker(bm25_memory, tiny_lm_dir, monkeypatch) -> None:
    """A chat template's reply starts without a space: the CLI printed "Burrow:The genus …"."""
    from burrow.generate import TokenEvent
    from burrow.generate.chat import ChatSession
    from burrow.generate.lmchat import TemplateChatSession

    for session in (ChatSession, TemplateChatSession):  # the tiny LM has no template; SmolLM2 has
        monkeypatch.setattr(session, "reply", lambda self, message: iter(
            [TokenEvent("The", 1, 0, 0), TokenEvent(" genus", 2, 1, 0)]))
    out = CliRunner().invoke(app, ["chat", "--lm", str(tiny_lm_dir), "--memory", str(bm25_memory.dir),
                                   "--device", "cpu"], input="Hello\n/quit\n")
    assert out.exit_code == 0, out.output
    assert "Burrow: The genus" in out.stdout, out.stdout


def test_cli_serve_with_run_and_lm(retro_dir, bm25_memory, tiny_lm_dir, monkeypatch) -> None:
    import burrow.serve

    seen = {}
    monkeypatch.setattr(burrow.serve, "run_server", lambda a, host, port, allow: seen.update(app=a))
    out = CliRunner().invoke(app, ["serve", str(retro_dir), "--lm", str(tiny_lm_dir), "--memory",
                                   str(bm25_memory.dir), "--device", "cpu", "--retriever", "dense"])
    assert out.exit_code == 0, out.output
    assert len(seen["app"].state.service.methods) == 2
