"""`burrow serve` wires the run, memory and limits into the app and listens on loopback by default."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from burrow.cli import app
from burrow.errors import BurrowError
from burrow.serve.config import check_listen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_builds_the_app_with_limits_on_loopback(retro_dir, gen_memory, monkeypatch) -> None:
    import burrow.serve

    seen = {}
    monkeypatch.setattr(burrow.serve, "run_server",
                        lambda a, host, port, allow: seen.update(app=a, host=host, port=port, allow=allow))
    port = _free_port()
    out = CliRunner().invoke(app, ["serve", str(retro_dir), "--memory", str(gen_memory.dir), "--port", str(port),
                                   "--max-concurrent", "3", "--max-tokens", "50", "--device", "cpu",
                                   "--allow-host", "burrow.example.org", "--allow-host", "*.lab.example"])
    assert out.exit_code == 0, out.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == port
    assert list(seen["allow"]) == ["burrow.example.org", "*.lab.example"]
    limiter, service = seen["app"].state.limiter, seen["app"].state.service
    assert limiter.limit == 3 and service.config.max_new_tokens == 50 and service.generator.retro


def test_a_port_or_host_the_server_cannot_listen_on_is_one_line_before_loading() -> None:
    """uvicorn reported these after the model loaded, in its own log format (a port out of range as three
    tracebacks), and `serve` had already printed "serving on ..."."""
    with pytest.raises(BurrowError, match="not a TCP port"):
        check_listen("127.0.0.1", 99999)
    with pytest.raises(BurrowError, match="not an address of this machine"):
        check_listen("999.1.1.1", 8000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(BurrowError, match="use another --port"):
            check_listen("127.0.0.1", busy.getsockname()[1])
    check_listen("127.0.0.1", _free_port())  # a free one passes


@pytest.mark.parametrize("name", ["http://burrow.example.org", "burrow.example.org:8000", "a/b", "*", ""])
def test_an_allowed_host_that_is_not_a_name_is_one_line_before_loading(name, retro_dir, gen_memory,
                                                                       monkeypatch) -> None:
    """Starlette compares the Host without its port: a scheme, port or path could never match."""
    import burrow.generate

    monkeypatch.setattr(burrow.generate, "load_generation_model", lambda *a: pytest.fail("model loaded"))
    out = CliRunner().invoke(app, ["serve", str(retro_dir), "--memory", str(gen_memory.dir),
                                   "--port", str(_free_port()), "--allow-host", name])
    assert isinstance(out.exception, BurrowError) and "is not a host name" in str(out.exception)


def test_serve_refuses_a_busy_port_before_loading_the_model(retro_dir, gen_memory, monkeypatch) -> None:
    import burrow.generate

    monkeypatch.setattr(burrow.generate, "load_generation_model", lambda *a: pytest.fail("model loaded"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = CliRunner().invoke(app, ["serve", str(retro_dir), "--memory", str(gen_memory.dir),
                                       "--port", str(busy.getsockname()[1])])
    assert isinstance(out.exception, BurrowError) and "use another --port" in str(out.exception)  # main() prints it
    assert "serving on" not in out.output


@pytest.mark.parametrize("command", ["serve", "generate", "chat"])
def test_in_context_options_and_limits_are_checked_before_anything_loads(command, retro_dir, gen_memory,
                                                                         burrow_cli, monkeypatch) -> None:
    """`--stride 0`, `--query-tokens -1` and `--retriever foo` were ignored without --lm and refused only after
    SmolLM2's ~40 s load with it; `serve --max-tokens 0` named the config field, not the option."""
    import burrow.generate

    monkeypatch.setattr(burrow.generate, "load_generation_model", lambda *a: pytest.fail("model loaded"))
    prompt = ["a prompt"] if command == "generate" else []
    for option in (["--stride", "0"], ["--query-tokens", "-1"], ["--retriever", "foo"]):
        code, _, err = burrow_cli(command, retro_dir, *prompt, "--memory", gen_memory.dir, "--lm", "smollm2", *option)
        assert code == 2 and option[0] in err and "Traceback" not in err, (option, err)
    if command == "serve":
        code, _, err = burrow_cli("serve", retro_dir, "--memory", gen_memory.dir, "--max-tokens", "0")
        assert code == 2 and err.startswith("error: --max-tokens must be ≥ 1"), err
