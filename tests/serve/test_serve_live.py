"""A real uvicorn server: generations run in worker threads, so /health answers and the request over
the limit is refused (429) while two generations are in flight; afterwards it serves normally."""

from __future__ import annotations

import json
import threading
import time

import httpx

from burrow.model import load_model
from burrow.serve import ServeConfig, create_app


class GatedGenerator:
    """Wraps the real generator: each stream emits its first event, then waits for ``gate``."""

    def __init__(self, inner) -> None:
        self.inner, self.gate = inner, threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def stream(self, prompt, config):
        events = self.inner.stream(prompt, config)

        def gated():
            for i, event in enumerate(events):
                if i == 1:
                    assert self.gate.wait(30), "test never opened the gate"
                yield event
        return gated()


def test_limits_hold_under_real_concurrency(retro_dir, gen_memory, live_server) -> None:
    app = create_app(load_model(retro_dir), gen_memory, ServeConfig(max_concurrent=2, device="cpu"))
    gated = GatedGenerator(app.state.service.generator)
    app.state.service.generator = gated
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        body = {"prompt": "Owls hunt", "max_tokens": 12, "seed": 0}
        with client.stream("POST", "/v1/generate", json=body) as a, \
                client.stream("POST", "/v1/generate", json=body) as b:
            lines_a, lines_b = a.iter_lines(), b.iter_lines()
            first_a, first_b = next(lines_a), next(lines_b)
            assert json.loads(first_a)["type"] == json.loads(first_b)["type"] == "token"
            health = client.get("/health").json()  # answered while both generations are blocked
            assert health["active"] == 2
            refused = client.post("/v1/generate", json=body)
            assert refused.status_code == 429 and "limit 2" in refused.json()["detail"]
            gated.gate.set()
            rest_a = [json.loads(line) for line in lines_a if line]
            rest_b = [json.loads(line) for line in lines_b if line]
            assert rest_a[-1]["type"] == rest_b[-1]["type"] == "done" and len(rest_a[-1]["tokens"]) == 12
        deadline = time.monotonic() + 5  # a slot is freed just after the stream's last line is sent
        while client.get("/health").json()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health").json()["active"] == 0
        done = client.post("/v1/generate", json={**body, "stream": False})
        assert done.status_code == 200 and len(done.json()["tokens"]) == 12
