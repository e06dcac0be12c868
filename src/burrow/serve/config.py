"""The server's limits and runtime, readable without importing torch (the CLI's options come from here)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from burrow.defaults import DEFAULT_DEVICE, DEFAULT_PRECISION, K_MAX
from burrow.errors import BurrowError

# The addresses on which the server guards its Host header (see serve.app.guard_host).
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    """Limits and runtime of the server; every limit is answered with a clear 4xx."""

    # Longest prompt in characters (413 above); the model's max_seq_len also bounds it in tokens.
    max_prompt_chars: int = 4000
    # Largest max_tokens a request may ask for (422 above).
    max_new_tokens: int = 256
    # Requests (generate, search, score) running at once; one more is answered 429.
    max_concurrent: int = 8
    # Largest k (neighbours) a request may ask for.
    max_k: int = K_MAX
    # Longest text /v1/score accepts, in characters (413 above).
    max_score_chars: int = 20000
    # Device: auto | cpu | cuda.
    device: str = DEFAULT_DEVICE
    # Autocast: auto | bf16 | fp32.
    precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        for name, option in (("max_prompt_chars", "--max-prompt-chars"), ("max_new_tokens", "--max-tokens"),
                             ("max_concurrent", "--max-concurrent"), ("max_k", "max_k"),
                             ("max_score_chars", "max_score_chars")):
            if int(getattr(self, name)) < 1:  # named as `burrow serve` spells it
                raise BurrowError(f"{option} must be ≥ 1, got {getattr(self, name)}")


def check_listen(host: str, port: int) -> None:
    """A :class:`BurrowError` when the server could not listen on ``host``:``port`` (an unknown host, a port
    in use or out of range, an address not on this machine); checked before the model loads, as uvicorn
    would otherwise report it after loading, in its own log format, without saying what to do."""
    if not 0 <= port <= 65535:
        raise BurrowError(f"--port {port} is not a TCP port (0-65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]  # "": every interface
    except (socket.gaierror, UnicodeError) as e:
        raise BurrowError(f"--host {host!r} is not an address of this machine ({e}); use 127.0.0.1, "
                          "0.0.0.0 or a local interface's address") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as e:
            fix = "use another --port" if e.errno == 98 else "check --host and --port"  # 98: EADDRINUSE
            raise BurrowError(f"cannot listen on {host}:{port} ({e.strerror}); {fix}") from None
