"""`burrow generate`, `burrow chat` and `burrow serve`: generation with attribution, chat, and the HTTP server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from burrow.cli.options import Device, K, Precision, default_of
from burrow.defaults import DEFAULT_DEVICE, DEFAULT_PRECISION
from burrow.generate.config import ChatConfig, GenerationConfig
from burrow.serve.config import LOOPBACK, ServeConfig, check_listen

if TYPE_CHECKING:
    from burrow.generate.attribution import ChunkAttribution

RUN = typer.Argument(None, help="Training run directory (its final/ or newest checkpoint) or a model directory "
                                "(optional with --lm).")
LM = typer.Option(None, "--lm", help="A pretrained causal LM reading the memory in context: smollm2, a local "
                                     "Hugging Face folder, or a hub id (offline unless HF_HUB_OFFLINE=0).")


def _check_retriever(value: str) -> str:
    """``--retriever`` is known before a model loads (with --lm it was refused after SmolLM2's ~40 s load)."""
    from burrow.memory.bm25 import RETRIEVERS

    if value not in RETRIEVERS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(RETRIEVERS)}")
    return value


RETRIEVER = typer.Option("bm25", "--retriever", callback=_check_retriever,
                         help="With --lm: bm25 (needs `burrow memory bm25`) or dense.")
STRIDE = typer.Option(32, "--stride", min=1, help="With --lm: generated tokens between retrievals (s).")
QUERY = typer.Option(32, "--query-tokens", min=1,
                     help="With --lm: the last q tokens of prompt + text form the query.")
MIN_COPY = typer.Option(default_of(GenerationConfig, "min_copy"), "--min-copy",
                        help="Shortest copied span (tokens) reported and highlighted.")
MEMORY = typer.Option(..., "--memory", "-m", help="Memory directory (its tokenizer; RETRO's neighbours).")
SEED = typer.Option(None, "--seed", help="Sampler seed (default: a fresh one, printed with --json).")
CHAT_SEED = typer.Option(None, "--seed", help="Seed of the first reply; reply i uses seed + i (default: fresh).")
TEMPERATURE = typer.Option(default_of(GenerationConfig, "temperature"), "--temperature",
                           help="Softmax temperature; 0 is greedy.")


def _generator(run: Path | None, memory: Path, device: str, precision: str, lm: str | None = None,
               retriever: str = "bm25", stride: int = 32, query_tokens: int = 32) -> Any:
    from burrow.errors import BurrowError
    from burrow.memory import Memory

    if (lm is None) == (run is None):
        raise BurrowError("give a RUN directory or --lm (e.g. --lm smollm2)" if lm is None else
                          "give either a RUN or --lm, not both (`burrow serve` takes both)")
    mem = Memory(memory)  # a wrong path is one line before torch and the model code load (~3 s)
    gen: Any
    if lm is not None:
        from burrow.generate.readable import lm_generator

        gen = lm_generator(lm, mem, retriever=retriever, stride=stride, query_tokens=query_tokens,
                           device=device, precision=precision)
    elif run is not None:
        mem.check_trained_on(run)  # a wrong RUN too is one line before torch loads
        from burrow.generate import Generator, load_generation_model

        gen = Generator(load_generation_model(run), mem, device=device, precision=precision)
    gen.warm_up()  # the encoder and index load now: a generation's seconds (tokens/s) time generating
    return gen


def generate_command(
    run: Path | None = RUN,
    prompt: str | None = typer.Argument(None, help="The text to continue."),
    memory: Path = MEMORY,
    max_tokens: int = typer.Option(default_of(GenerationConfig, "max_new_tokens"), "--max-tokens",
                                   help="Most tokens to generate."),
    temperature: float = TEMPERATURE,
    top_k: int = typer.Option(default_of(GenerationConfig, "top_k"), "--top-k",
                              help="Sample among the k most likely tokens (0: off)."),
    top_p: float = typer.Option(default_of(GenerationConfig, "top_p"), "--top-p", help="Nucleus sampling p (1: off)."),
    greedy: bool = typer.Option(False, "--greedy", help="Always take the most likely token."),
    seed: int | None = SEED,
    k: K = default_of(GenerationConfig, "k"),
    no_retrieval: bool = typer.Option(False, "--no-retrieval", help="Run a RETRO model without retrieval."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (text, chunks, attributions)."),
    device: Device = DEFAULT_DEVICE,
    precision: Precision = DEFAULT_PRECISION,
    lm: str | None = LM,
    retriever: str = RETRIEVER,
    stride: int = STRIDE,
    query_tokens: int = QUERY,
    min_copy: int = MIN_COPY,
) -> None:
    """Continue PROMPT, streaming the text; then each generated chunk's sources, copied spans highlighted.

    `burrow generate RUN PROMPT --memory MEM`, or `burrow generate PROMPT --lm smollm2 --memory MEM`.
    """
    from burrow.errors import BurrowError

    if prompt is None:  # `burrow generate --lm smollm2 PROMPT`: the one positional is the prompt
        if run is None or lm is None:
            raise BurrowError("give the prompt to continue: burrow generate RUN PROMPT (or PROMPT --lm NAME)")
        run, prompt = None, str(run)
    config = GenerationConfig(max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              greedy=greedy, seed=seed, k=k, retrieval=not no_retrieval, min_copy=min_copy)
    generator = _generator(run, memory, device, precision, lm, retriever, stride, query_tokens)
    from burrow.generate import AttributionEvent, DoneEvent, TokenEvent

    if as_json:
        typer.echo(json.dumps(generator.generate(prompt, config).to_json(), indent=2, ensure_ascii=False))
        return
    console = _console()
    console.print(prompt, end="", style="dim", markup=False, highlight=False)
    attributions = []
    done = None
    for event in generator.stream(prompt, config):
        if isinstance(event, TokenEvent):
            console.print(event.text, end="", markup=False, highlight=False)
        elif isinstance(event, AttributionEvent):
            attributions.append(event.attribution)
        elif isinstance(event, DoneEvent):
            done = event.result
    console.print()
    if done is not None and done.finish_reason == "max_seq_len":  # fewer tokens than asked, said only in --json
        typer.echo(f"stopped after {len(done.tokens)} of {max_tokens} tokens: the model's context (max_seq_len) is "
                   "full", err=True)
    bm25 = getattr(generator, "retriever", "dense") == "bm25"  # in-context with BM25: distances are −scores
    for attribution in attributions:
        _print_attribution(console, attribution, bm25)


def _console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=True)


def _marked(text: str, start: int | None, end: int | None) -> Any:
    """Rich text with [start, end) highlighted."""
    from rich.text import Text

    out = Text(text)
    if start is not None and end is not None and end > start:
        out.stylize("bold black on yellow", start, end)
    return out


def _print_attribution(console: Any, a: ChunkAttribution, bm25: bool = False) -> None:
    """One generated chunk: its text, then each neighbour with source, distance (or BM25 score) and the copied
    span."""
    c = a.copied
    console.rule(f"chunk {a.chunk}", align="left", style="dim")
    console.print(_marked(a.text, c.generated_start - a.text_start if c else None,
                          c.generated_end - a.text_start if c else None))
    if not a.neighbours:
        console.print("  (no passage for this chunk: the first chunk of a sequence, or nothing matched)", style="dim")
    for nb in a.neighbours:
        copied = f", copied {nb.copied.tokens} token(s)" if nb.copied else ""
        how = f"BM25 score {-nb.distance:.3f}" if bm25 else f"distance {nb.distance:.3f}"
        console.print(f"  #{nb.rank} {nb.source}  {how}{copied}", style="cyan", markup=False, highlight=False)
        cs = nb.copied
        console.print(_marked(nb.text, cs.neighbour_start if cs else None, cs.neighbour_end if cs else None))


def chat_command(
    run: Path | None = RUN,
    memory: Path = MEMORY,
    max_tokens: int = typer.Option(default_of(ChatConfig, "max_new_tokens"), "--max-tokens",
                                   help="Most tokens per reply."),
    top_p: float = typer.Option(default_of(ChatConfig, "top_p"), "--top-p",
                                help="Nucleus sampling p (Dialogue-Prompted Gopher: 0.8)."),
    temperature: float = TEMPERATURE,
    seed: int | None = CHAT_SEED,
    k: K = default_of(ChatConfig, "k"),
    device: Device = DEFAULT_DEVICE,
    precision: Precision = DEFAULT_PRECISION,
    lm: str | None = LM,
    retriever: str = RETRIEVER,
    stride: int = STRIDE,
    query_tokens: int = QUERY,
) -> None:
    """Chat with the model (one message per line on stdin; /quit ends). Works with piped input.

    With --lm the LM's own chat template is used when its tokenizer has one (SmolLM2-Instruct has).
    """
    from burrow.errors import BurrowError

    config = ChatConfig(top_p=top_p, temperature=temperature, max_new_tokens=max_tokens, k=k, seed=seed)  # checked
    gen = _generator(run, memory, device, precision, lm, retriever, stride, query_tokens)  # wrong paths fail here
    from burrow.generate import TokenEvent
    from burrow.generate.lmchat import chat_session

    session = chat_session(gen, config)  # a preamble that leaves no room for a message fails here
    console, interactive, warned = _console(), sys.stdin is not None and sys.stdin.isatty(), False
    if interactive:
        console.print("Chat with Burrow. Type /quit to leave.", style="dim")
    while True:
        if interactive:
            console.print("User: ", end="", style="bold")
        line, valid = _read_line()
        if not valid and not warned:
            typer.echo("warning: the input is not valid UTF-8; its undecodable bytes are read as U+FFFD", err=True)
            warned = True
        if not line or line.strip() in ("/quit", "/exit"):
            break
        if not line.strip():
            continue
        console.print("Burrow:", end="", style="bold green")
        first = True  # a dialogue-prompted model's reply starts with its own space; a chat template's does not
        try:
            for event in session.reply(line):
                if isinstance(event, TokenEvent) and event.text:
                    text = event.text if not first or event.text[0].isspace() else " " + event.text
                    first = False
                    console.print(text, end="", markup=False, highlight=False)
        except BurrowError as e:
            console.print(f"\nerror: {e}", style="red", markup=False)
        console.print()


def _read_line() -> tuple[str, bool]:
    """One line of stdin whatever its bytes, and whether it was valid UTF-8 (if not, bad bytes become U+FFFD).
    A closed stdin (``<&-``) reads as its end."""
    if sys.stdin is None:
        return "", True
    buffer = getattr(sys.stdin, "buffer", None)
    raw = buffer.readline() if buffer is not None else \
        sys.stdin.readline().encode("utf-8", errors="surrogatepass")
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def serve_command(
    run: Path | None = RUN,
    memory: Path = MEMORY,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", metavar="NAME",
        help="On a loopback --host, also answer requests whose Host is NAME (a reverse proxy that passes on its "
             "own Host, e.g. burrow.example.org; '*.example.org' for its subdomains). Repeatable."),
    max_concurrent: int = typer.Option(default_of(ServeConfig, "max_concurrent"), "--max-concurrent",
                                       help="Requests at once; more get 429."),
    max_tokens: int = typer.Option(default_of(ServeConfig, "max_new_tokens"), "--max-tokens",
                                   help="Largest max_tokens a request may ask for."),
    max_prompt_chars: int = typer.Option(default_of(ServeConfig, "max_prompt_chars"), "--max-prompt-chars",
                                         help="Longest prompt in characters."),
    device: Device = DEFAULT_DEVICE,
    precision: Precision = DEFAULT_PRECISION,
    lm: str | None = LM,
    retriever: str = RETRIEVER,
    stride: int = STRIDE,
    query_tokens: int = QUERY,
) -> None:
    """Serve the model over HTTP: /v1/generate, /v1/search, /v1/score, /health, /docs and a web page at /.

    RUN and --lm together serve both; the page then offers a model/method picker.
    """
    from burrow.errors import BurrowError
    from burrow.memory import Memory

    if run is None and lm is None:
        raise BurrowError("give a RUN directory, an --lm (e.g. --lm smollm2), or both")
    config = ServeConfig(max_prompt_chars=max_prompt_chars, max_new_tokens=max_tokens,
                         max_concurrent=max_concurrent, device=device, precision=precision)
    for name in allow_host:
        if not name or any(c in name for c in "/:@ ") or name.strip("*.") == "":
            raise BurrowError(f"--allow-host {name!r} is not a host name: give the name alone, without scheme, "
                              "port or path (e.g. burrow.example.org or *.example.org)")
    if allow_host and host not in LOOPBACK:
        typer.echo(f"note: --allow-host has no effect on --host {host}: only a loopback server checks the Host",
                   err=True)
    check_listen(host, port)  # a busy port or unknown host: before the models load, not after
    mem = Memory(memory)
    if run is not None:
        mem.check_trained_on(run)  # wrong paths are one line before torch and the server code load
    from burrow.generate import load_generation_model
    from burrow.serve import create_app, run_server

    generators = {}
    if lm is not None:
        from burrow.generate.readable import lm_generator

        gen = lm_generator(lm, mem, retriever=retriever, stride=stride, query_tokens=query_tokens, device=device,
                           precision=precision)
        generators[f"{gen.name}+{retriever}"] = gen
    model = load_generation_model(run) if run is not None else None
    app = create_app(model, mem, config, generators)
    del model  # the server's generator holds what it decodes from (a pre-cast copy under autocast)
    typer.echo(f"serving on http://{host}:{port}/ (API docs at /docs)")
    run_server(app, host, port, allow_host)


def register(app: typer.Typer) -> None:
    """Add ``generate``, ``chat`` and ``serve`` to the root app."""
    app.command("generate")(generate_command)
    app.command("chat")(chat_command)
    app.command("serve")(serve_command)
