"""The HTTP layer: FastAPI routes, limits, streaming, and the web page.

Routes: ``POST /v1/generate`` (newline-delimited JSON events, or one JSON document with
``stream: false``), ``POST /v1/search``, ``POST /v1/score``, ``GET /health``, the page at ``/`` and
OpenAPI docs at ``/docs``. Model work runs in worker threads (Starlette's thread pool), so the event
loop keeps answering /health and refusing requests over the limit while generations run.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from burrow.data.tokenizer import valid_text
from burrow.errors import BurrowError
from burrow.generate import DoneEvent, Event
from burrow.memory import Memory
from burrow.model.protocol import RetrievalLM
from burrow.serve.config import LOOPBACK
from burrow.serve.schemas import DEFAULT_MAX_TOKENS, GenerateRequest, ScoreRequest, SearchRequest
from burrow.serve.service import ServeConfig, Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
NDJSON = "application/x-ndjson"


class Limiter:
    """Counts requests in flight; over the limit a request is refused at once (429), never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take a slot or raise 429."""
        with self._lock:
            if self.active >= self.limit:
                raise HTTPException(429, f"too many concurrent requests (limit {self.limit}); retry shortly",
                                    headers={"Retry-After": "1"})
            self.active += 1

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self.active -= 1


def create_app(model: RetrievalLM | None, memory: Memory, config: ServeConfig | None = None,
               generators: dict[str, Any] | None = None) -> FastAPI:
    """A FastAPI app serving ``model`` (None: only ``generators``, e.g. an LM reading the memory in
    context, by method id) with ``memory`` under ``config``'s limits."""
    config = config or ServeConfig()
    service = Service(model, memory, config, generators)
    limiter = Limiter(config.max_concurrent)
    app = FastAPI(title="burrow", version="1", description="Retrieval-enhanced generation with attribution.")
    # a body larger than any request these limits allow is refused while it arrives, before it is parsed
    app.add_middleware(BodyLimit, max_bytes=body_limit(config))
    app.state.service, app.state.limiter = service, limiter
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, the loaded model and memory, limits and requests in flight."""
        return {"status": "ok", **service.info(), "active": limiter.active,
                "limits": {"max_prompt_chars": config.max_prompt_chars, "max_tokens": config.max_new_tokens,
                           "max_concurrent": config.max_concurrent, "max_k": config.max_k,
                           "max_score_chars": config.max_score_chars}}

    @app.post("/v1/generate", response_model=None)
    async def generate(req: GenerateRequest) -> StreamingResponse | JSONResponse:
        """Generate a continuation; per chunk, an attribution to the neighbours it attended to."""
        _check_text("prompt", req.prompt, config.max_prompt_chars)
        max_tokens = req.max_tokens or min(DEFAULT_MAX_TOKENS, config.max_new_tokens)
        _check_limit("max_tokens", max_tokens, config.max_new_tokens)
        _check_limit("k", req.k, config.max_k)
        try:
            method = service.pick(req.method)
        except BurrowError as e:  # a method this server does not have
            raise HTTPException(422, str(e)) from e
        limiter.acquire()
        try:  # the setup runs now (tokenizing, the cache): a failure here must give the slot back
            events = method.stream(req.prompt, req.generation_config(max_tokens))
        except BurrowError as e:  # e.g. a prompt longer than the model's context
            limiter.release()
            raise HTTPException(413 if str(e).startswith("the prompt is") else 400, str(e)) from e
        except Exception as e:  # a bug or an out-of-memory: a JSON 500, and the slot is not lost
            limiter.release()
            log.exception("generation setup failed")
            return JSONResponse({"detail": f"generation failed: {e}"}, status_code=500)
        if req.stream:
            return StreamingResponse(_ndjson(events, limiter), media_type=NDJSON)
        try:
            result = await run_in_threadpool(_last, events)
        except BurrowError as e:  # a failure inside the generation (a search): JSON, as every other error
            raise HTTPException(400, str(e)) from e
        except Exception as e:  # a bug: still a JSON answer (the page reads one), not a plain-text 500
            log.exception("generation failed")
            return JSONResponse({"detail": f"generation failed: {e}"}, status_code=500)
        finally:
            limiter.release()
        return JSONResponse(result)

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> dict[str, Any]:
        """The k nearest memory chunks of a query, with text, source and distance."""
        _check_text("query", req.query, config.max_prompt_chars)
        _check_limit("k", req.k, config.max_k)
        neighbours = await _limited(limiter, service.search, req.query, req.k)
        return {"query": req.query, "neighbours": neighbours}

    @app.post("/v1/score")
    async def score(req: ScoreRequest) -> dict[str, Any]:
        """Bits-per-byte of a text (RETRO[ON] with retrieval for a RETRO model)."""
        _check_text("text", req.text, config.max_score_chars)
        _check_limit("k", req.k, config.max_k)
        result: dict[str, Any] = await _limited(limiter, service.score, req.text, req.retrieval, req.k)
        return result

    _add_page(app)
    return app


def body_limit(config: ServeConfig) -> int:
    """The largest request body the limits allow: the longest text written as JSON escapes at worst (12 bytes
    for a character outside the BMP: a surrogate pair, ``\\ud83e\\udd89``), plus room for the other fields."""
    return 12 * max(config.max_prompt_chars, config.max_score_chars) + 64 * 1024


class BodyLimit:
    """ASGI middleware: a request whose body (declared or received) is over ``max_bytes`` gets a 413 before
    the app reads it; the JSON parse and validation of a 500 MB prompt would hold the event loop."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        if scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # read the body here, up to the limit (a chunked one has no content-length to check), then replay it
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        pending = iter(messages)

        async def replay() -> Any:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"the request body is over this server's limit of {self.max_bytes} bytes"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body.encode()})


def guard_host(app: FastAPI, host: str, allow: Sequence[str] = ()) -> None:
    """On a loopback address, answer only requests addressed to it (``Host: localhost:8000``) or to a name in
    ``allow`` (a reverse proxy that passes on its own Host): a web page elsewhere could otherwise point its own
    domain at 127.0.0.1 (DNS rebinding) and read the memory."""
    if host in LOOPBACK:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware,
                           allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1", *allow])


def _add_page(app: FastAPI) -> None:
    """The web page at / and its static files."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what (``loc``, ``msg``, ``type``) but not the offending input: FastAPI's own answer
    echoes it, and a NaN or a lone surrogate there cannot be written as JSON (a 500 instead of the 422)."""
    detail = []
    for error in exc.errors():
        loc, msg = [str(part) for part in error.get("loc", ())], str(error.get("msg", "invalid"))
        if loc == ["body"] and "json" not in request.headers.get("content-type", ""):
            msg += "; send the body as a JSON object with the header Content-Type: application/json"
        detail.append({"loc": [valid_text(part) for part in loc], "msg": valid_text(msg),
                       "type": str(error.get("type", ""))})
    return JSONResponse({"detail": detail}, status_code=422)


def _check_text(name: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise HTTPException(413, f"{name} is {len(text)} characters; the limit is {limit}")


def _check_limit(name: str, value: int, limit: int) -> None:
    if value > limit:
        raise HTTPException(422, f"{name} = {value} is over this server's limit of {limit}")


async def _limited(limiter: Limiter, fn: Any, *args: Any) -> Any:
    """Run blocking ``fn`` in a worker thread under a concurrency slot; user errors become 400."""
    limiter.acquire()
    try:
        return await run_in_threadpool(fn, *args)
    except BurrowError as e:
        raise HTTPException(400, str(e)) from e
    finally:
        limiter.release()


def _last(events: Iterator[Event]) -> dict[str, Any]:
    """Run a generation to the end; its result as JSON."""
    for event in events:
        if isinstance(event, DoneEvent):
            return event.to_json()
    raise RuntimeError("generation ended without a result")  # pragma: no cover


async def _ndjson(events: Iterator[Event], limiter: Limiter) -> AsyncIterator[str]:
    """Events as newline-delimited JSON, each step in a worker thread; the slot is freed however it ends
    (finished, failed, or the client went away)."""
    try:
        async for event in iterate_in_threadpool(events):
            yield json.dumps(event.to_json()) + "\n"
    except Exception as e:  # the status line is already sent: report the failure in the stream
        log.exception("generation failed")
        yield json.dumps({"type": "error", "message": str(e)}) + "\n"
    finally:
        limiter.release()


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, allow_hosts: Sequence[str] = ()) -> None:
    """Serve ``app`` with uvicorn until interrupted; ``allow_hosts``: see :func:`guard_host`."""
    import uvicorn

    if host not in LOOPBACK:
        log.warning("serving on %s: reachable from other machines; burrow has no authentication", host)
    guard_host(app, host, allow_hosts)
    uvicorn.run(app, host=host, port=port, log_level="info")
