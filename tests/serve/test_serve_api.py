"""The HTTP API's contract: health, generate (streamed and not), search, score, docs, page, and bad requests."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from burrow.model import load_model
from burrow.serve import ServeConfig, create_app

LIMITS = ServeConfig(max_prompt_chars=5000, max_new_tokens=40, max_concurrent=2, max_k=4, max_score_chars=3000,
                     device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def client(retro_dir, gen_memory) -> TestClient:
    return TestClient(create_app(load_model(retro_dir), gen_memory, LIMITS))


def events_of(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_health_reports_model_memory_and_limits(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"]["retro"] is True and body["model"]["chunk_size"] == 8
    assert body["memory"]["chunks"] > 0 and body["limits"]["max_tokens"] == 40 and body["active"] == 0


def test_generate_streams_tokens_attributions_then_done(client: TestClient) -> None:
    r = client.post("/v1/generate", json={"prompt": "Owls hunt at night", "max_tokens": 20, "seed": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    events = events_of(r)
    assert events[-1]["type"] == "done" and {e["type"] for e in events[:-1]} == {"token", "attribution"}
    done = events[-1]
    assert "".join(e["text"] for e in events if e["type"] == "token") == done["text"]
    attributions = [e for e in events if e["type"] == "attribution"]
    assert [a["chunk"] for a in attributions] == [c["chunk"] for c in done["chunks"]]
    assert any(nb["source"] and nb["distance"] >= 0 for a in attributions for nb in a["neighbours"])


def test_generate_without_streaming_matches_the_stream(client: TestClient) -> None:
    req = {"prompt": "Bread is baked", "max_tokens": 16, "greedy": True}
    whole = client.post("/v1/generate", json={**req, "stream": False})
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
    streamed = events_of(client.post("/v1/generate", json=req))[-1]
    assert whole.json()["tokens"] == streamed["tokens"] and len(streamed["tokens"]) == 16


def test_search_and_score(client: TestClient) -> None:
    hits = client.post("/v1/search", json={"query": "volcano lava in Sicily", "k": 3}).json()["neighbours"]
    assert len(hits) == 3 and "lava.txt" in hits[0]["source"] and hits[0]["distance"] <= hits[-1]["distance"]
    text = "Owls hunt at night, turning their heads to hear the smallest mouse."
    on = client.post("/v1/score", json={"text": text}).json()
    off = client.post("/v1/score", json={"text": text, "retrieval": False}).json()
    assert on["mode"] == "on" and off["mode"] == "off" and on["bytes"] == len(text.encode())
    assert math.isfinite(on["bpb"]) and on["bpb"] > 0 and on["bpb"] != off["bpb"]
    assert on["bits"] == pytest.approx(on["bpb"] * on["bytes"])


def test_docs_openapi_and_page(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/generate", "/v1/search", "/v1/score", "/health"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "Generate" in page.text
    assert ".innerHTML" not in page.text  # model and memory text is inserted as text, never parsed as HTML


@pytest.mark.parametrize("body, status, needle", [
    ({"prompt": "x" * 5001}, 413, "5000"),
    ({"prompt": "word " * 900}, 413, "shorten the prompt"),  # under the char limit, over the model's context
    ({"prompt": "hi", "max_tokens": 41}, 422, "limit of 40"),
    ({"prompt": "hi", "k": 5}, 422, "limit of 4"),
    ({"prompt": "hi", "k": 0}, 422, "greater than or equal"),
    ({"prompt": "hi", "max_tokens": "5"}, 422, "int"),
    ({"prompt": 5}, 422, "string"),
    ({"prompt": "hi", "greedy": "yes"}, 422, "bool"),
    ({"prompt": "hi", "top_p": 1.5}, 422, "less than or equal"),
    ({"prompt": "hi", "temprature": 0.5}, 422, "temprature"),
    ({}, 422, "prompt"),
    ({"prompt": "hi", "method": "prompt-lm"}, 422, "unknown method 'prompt-lm'"),  # was a 413: "prompt" in it
    ({"prompt": "hi", "stop": ["x" * 65]}, 422, "at most 64 characters"),
])
def test_bad_generate_requests_are_clear_4xx(client: TestClient, body: dict, status: int, needle: str) -> None:
    r = client.post("/v1/generate", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_bad_search_and_score_requests(client: TestClient) -> None:
    assert client.post("/v1/search", json={"query": "x", "k": 99}).status_code == 422
    assert client.post("/v1/search", json={"query": ""}).status_code == 422
    assert client.post("/v1/search", json={"q": "x"}).status_code == 422
    assert client.post("/v1/score", json={"text": "x" * 3001}).status_code == 413
    assert client.post("/v1/score", json={"text": ["x"]}).status_code == 422
    r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_over_the_concurrency_limit_is_429_and_the_server_recovers(client: TestClient) -> None:
    limiter = client.app.state.limiter
    limiter.acquire()
    limiter.acquire()  # both slots taken (as by two running generations)
    try:
        for path, body in (("/v1/generate", {"prompt": "hi"}), ("/v1/search", {"query": "hi"}),
                           ("/v1/score", {"text": "hi"})):
            r = client.post(path, json=body)
            assert r.status_code == 429 and "limit 2" in r.json()["detail"] and r.headers["retry-after"] == "1"
        assert client.get("/health").json()["active"] == 2
    finally:
        limiter.release()
        limiter.release()
    assert client.post("/v1/generate", json={"prompt": "hi", "max_tokens": 4, "stream": False}).status_code == 200
    assert client.get("/health").json()["active"] == 0  # every earlier request gave its slot back


def test_a_baseline_model_serves_without_attributions(base_dir, gen_memory) -> None:
    client = TestClient(create_app(load_model(base_dir), gen_memory, LIMITS))
    events = events_of(client.post("/v1/generate", json={"prompt": "Owls", "max_tokens": 20}))
    assert events[-1]["type"] == "done" and not any(e["type"] == "attribution" for e in events)
    assert client.post("/v1/score", json={"text": "Owls hunt."}).json()["mode"] == "baseline"


@pytest.mark.parametrize("body", [b'{"prompt": "a", "temperature": NaN}', b'{"prompt": "a", "top_p": NaN}',
                                  b'{"prompt": "a", "temperature": Infinity}', b'{"prompt": "a", "\\ud800": 1}'])
def test_a_request_whose_error_cannot_echo_its_input_is_still_a_422(client: TestClient, body: bytes) -> None:
    """FastAPI's 422 echoes the bad input; NaN, Infinity or a lone surrogate there could not be written as JSON,
    so the answer was a plain-text 500."""
    r = client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "body" and "input" not in r.json()["detail"][0]


def test_lone_surrogates_in_request_text_read_as_replacement_characters(client: TestClient) -> None:
    """A JSON "\\ud800" escape in a prompt, query or text was a 500 when the answer echoed or continued it."""
    for path, body in (("/v1/search", b'{"query": "owls \\ud800 hunt"}'), ("/v1/score", b'{"text": "a\\ud800b"}'),
                       ("/v1/generate", b'{"prompt": "Owls \\ud800", "max_tokens": 3, "stream": false, "seed": 0}')):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, (path, r.text)
    r = client.post("/v1/search", content=b'{"query": "owls \\ud800 hunt"}',
                    headers={"content-type": "application/json"})
    assert r.json()["query"] == "owls \ufffd hunt"


def test_a_blank_search_query_and_a_body_sent_without_its_content_type_are_explained(client: TestClient) -> None:
    for query in ("   ", "\n"):
        r = client.post("/v1/search", json={"query": query})
        assert r.status_code == 422 and "query is empty" in r.text, r.text  # the CLI refuses it too
    r = client.post("/v1/search", content=b'{"query": "owls"}', headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.text, r.text
    assert '"owls"' not in r.text  # the body is not echoed back


def test_a_failure_inside_a_whole_generation_is_a_json_answer(client: TestClient, monkeypatch) -> None:
    """stream: false, and the memory search fails mid-generation: a 400 with a JSON detail for a user error, a
    JSON 500 for anything else (a plain-text 500 broke the page's side-by-side comparison); the slot is freed."""
    from burrow.errors import BurrowError
    from burrow.memory import Memory

    for error, status in ((BurrowError("the memory's index is damaged"), 400), (RuntimeError("boom"), 500)):
        def failing(self, *a, _e=error, **k):
            raise _e

        monkeypatch.setattr(Memory, "search", failing)
        r = client.post("/v1/generate", json={"prompt": "Owls hunt at night " * 8, "max_tokens": 20,
                                              "stream": False})
        assert r.status_code == status and r.headers["content-type"].startswith("application/json"), r.text
        assert str(error) in r.json()["detail"]
        monkeypatch.undo()
    assert client.get("/health").json()["active"] == 0


def test_a_failure_while_a_stream_is_set_up_gives_its_slot_back(retro_dir, gen_memory, monkeypatch) -> None:
    """Only a BurrowError in the stream's setup released the slot: after max_concurrent out-of-memory errors
    (or bugs) every request got 429 for good."""
    from burrow.generate import Generator

    client = TestClient(create_app(load_model(retro_dir), gen_memory, LIMITS), raise_server_exceptions=False)

    def broken(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(Generator, "stream", broken)
    for _ in range(3):  # more than max_concurrent = 2
        r = client.post("/v1/generate", json={"prompt": "Owls hunt", "max_tokens": 4})
        assert r.status_code == 500 and "out of memory" in r.json()["detail"], r.text
    assert client.get("/health").json()["active"] == 0
    monkeypatch.undo()
    r = client.post("/v1/generate", json={"prompt": "Owls hunt", "max_tokens": 4, "stream": False})
    assert r.status_code == 200


def test_a_body_over_what_the_limits_allow_is_refused_before_it_is_parsed(client: TestClient, monkeypatch) -> None:
    import burrow.serve.app as app_module

    limit = app_module.body_limit(LIMITS)
    parsed = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1) or real(*a, **k))
    body = b'{"prompt": "' + b"x" * limit + b'"}'
    r = client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert not parsed  # refused before anything parsed it
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text

    def chunks():  # no content-length: counted as it arrives
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    r = client.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    monkeypatch.undo()
    assert client.post("/v1/generate", json={"prompt": "hi", "max_tokens": 2, "stream": False}).status_code == 200


def test_a_loopback_server_answers_only_requests_addressed_to_it(retro_dir, gen_memory) -> None:
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 could read /v1/search."""
    from burrow.serve.app import guard_host

    app = create_app(load_model(retro_dir), gen_memory, LIMITS)
    guard_host(app, "127.0.0.1")
    client = TestClient(app)
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/health", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    # a reverse proxy that passes on its own Host (nginx's `proxy_set_header Host $host`): --allow-host
    proxied = create_app(load_model(retro_dir), gen_memory, LIMITS)
    guard_host(proxied, "127.0.0.1", ["burrow.example.org"])
    client = TestClient(proxied)
    assert client.get("/health", headers={"host": "burrow.example.org"}).status_code == 200
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 400
