"""The serving tests use the generation tests' tiny memory and models (tests/generate/conftest.py),
loaded by path because two conftest modules cannot import each other by name."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "generate" / "conftest.py"
_spec = importlib.util.spec_from_file_location("burrow_tests_generate_fixtures", _path)
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

gen_memory = _fixtures.gen_memory
retro_dir = _fixtures.retro_dir
base_dir = _fixtures.base_dir
one_torch_thread = _fixtures.one_torch_thread
tiny_config = _fixtures.tiny_config
tiny_lm_dir = _fixtures.tiny_lm_dir
bm25_memory = _fixtures.bm25_memory



@contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port in between
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def live_server():
    """:func:`serving`, as a fixture (test modules cannot import a conftest reliably)."""
    return serving

