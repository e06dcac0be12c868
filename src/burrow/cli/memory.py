"""`burrow memory …`: build, inspect, search a retrieval memory and precompute neighbours."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from burrow.cli.options import DEFAULT_K, Device, EncoderPrecision, Force, default_of, out_option
from burrow.data.corpus import CorpusConfig
from burrow.data.tokenizer import TokenizerConfig
from burrow.errors import BurrowError
from burrow.memory.config import DEFAULT_ENCODER, EncoderConfig, MemoryConfig
from burrow.memory.index import IndexConfig

app = typer.Typer(help="Build, inspect and search a retrieval memory (chunks, keys, FAISS index, neighbours).",
                  no_args_is_help=True)
log = logging.getLogger("burrow")

TEXT_FIELD = typer.Option("text", "--text-field", help="JSONL/Parquet/datasets field holding the text.")
TXT_SPLIT = typer.Option("auto", "--txt-split",
                         help="How .txt files split into documents: auto|file|blank-line|wikitext|line.")
INVALID = typer.Option("replace", "--invalid-utf8", help="Invalid UTF-8: 'replace' with U+FFFD or 'skip' the doc.")


@app.command("build")
def build(
    corpus: list[str] = typer.Argument(..., help="Files or folders (.txt .md .jsonl[.gz] .parquet) or hf:NAME."),
    out: Path = out_option(..., "Memory directory to create or resume."),
    text_field: str = TEXT_FIELD,
    txt_split: str = TXT_SPLIT,
    invalid_utf8: str = INVALID,
    tokenizer: str | None = typer.Option(
        None, "--tokenizer",
        help="Existing tokenizer: .model, tokenizer.json, an HF dir or name (downloaded only with HF_HUB_OFFLINE=0), "
             "or smollm2. Default: train one."),
    gguf_file: str | None = typer.Option(None, "--gguf-file", help="GGUF file inside --tokenizer's HF dir."),
    vocab_size: int = typer.Option(default_of(TokenizerConfig, "vocab_size"), "--vocab-size",
                                   help="Vocabulary of the trained tokenizer."),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder", help="sentence-transformers model name or path."),
    precision: EncoderPrecision = default_of(EncoderConfig, "precision"),
    batch_size: int = typer.Option(default_of(EncoderConfig, "batch_size"), "--batch-size",
                                   help="Encoder batch size."),
    shard_size: int = typer.Option(default_of(EncoderConfig, "shard_size"), "--shard-size",
                                   help="Chunks per key shard (the resume and Ray task granularity)."),
    chunk_size: int = typer.Option(default_of(MemoryConfig, "chunk_size"), "--chunk-size",
                                   help="Tokens per chunk (the paper's m = 64)."),
    index: str | None = typer.Option(None, "--index", help="FAISS factory string (default: chosen by size)."),
    search_params: str | None = typer.Option(None, "--search-params", help="e.g. efSearch=128 or nprobe=64."),
    neighbours_k: int = typer.Option(0, "--neighbours", "-k", min=0, help="Also precompute k neighbours per chunk."),
    engine: str = typer.Option("local", "--engine",
                               help="local (this process) or ray (key shards and neighbours on Ray Data actors)."),
    address: str | None = typer.Option(None, "--address", help="--engine ray: join this Ray cluster (HOST:PORT or "
                                                                "auto); default: start a local Ray."),
    workers: int = typer.Option(2, "--workers", help="--engine ray: encoder actors, one encoder each."),
    device: Device = default_of(EncoderConfig, "device"),
    force: Force = False,
) -> None:
    """Build a memory from CORPUS: tokenizer → tokens → 64-token chunks → frozen-encoder keys → FAISS index."""
    from burrow.device import pick_device
    from burrow.memory.build import build_memory, check_memory_out, compute_neighbours, encoder_on

    check_memory_out(out)  # a run's folder, say, before its footprint.json records the refused build
    pick_device(device)  # an unusable --device is refused before any work
    config = MemoryConfig(
        corpus=CorpusConfig(text_field=text_field, txt_split=txt_split, invalid_utf8=invalid_utf8),  # type: ignore[arg-type]
        tokenizer=TokenizerConfig(source=tokenizer, vocab_size=vocab_size, gguf_file=gguf_file),
        encoder=EncoderConfig(model=encoder, precision=precision, batch_size=batch_size, shard_size=shard_size),
        index=IndexConfig(factory=index, search_params=search_params),
        chunk_size=chunk_size,
    )
    if engine not in ("local", "ray"):
        raise BurrowError(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray" and device != "auto":
        raise BurrowError("--device applies to --engine local; Ray's encoder actors pick their own device")
    from burrow.footprint import forward_flops, model_parameters, track
    from burrow.memory.encode import resolve_model_path

    with track(out, "memory build") as stage:
        if engine == "ray":
            from burrow.memory.ray_engine import RayConfig, build_memory_ray, neighbours_ray

            ray_config = RayConfig(address=address, workers=workers)
            memory, timings = build_memory_ray(corpus, out, config, ray_config, force=force)
        else:
            memory, timings = build_memory(corpus, out, config, force=force, encoder=encoder_on(config, device))
        encoded = sum(t.items for t in timings if t.name == "embeddings" and not t.skipped)
        stage.skipped = all(t.skipped for t in timings)
        stage.flops, stage.flops_formula = forward_flops(model_parameters(resolve_model_path(config.encoder.model)),
                                                         encoded * config.chunk_size, "chunk tokens encoded")
    for t in timings:
        rate = f", {t.rate:,.0f} {t.unit}/s" if t.items > 1 else ""  # not "8 tokenizer/s" for the one tokenizer
        state = "up to date" if t.skipped else f"{t.seconds:.1f} s{rate}"
        typer.echo(f"  {t.name:<11} {t.items:>12,} {t.unit:<7} {state}")
    if neighbours_k:
        _check_table_k(neighbours_k, len(memory))
    if neighbours_k and engine == "ray":
        neighbours_ray(memory, k=neighbours_k, config=ray_config)
    elif neighbours_k:
        compute_neighbours(memory, k=neighbours_k)
    m = memory.manifest
    typer.echo(f"memory {out}: {m['n_docs']:,} documents, {m['n_tokens']:,} tokens, {m['n_chunks']:,} chunks, "
               f"index {m['index']}")
    read = m.get("corpus") or {}
    if read.get("truncated"):
        typer.echo(f"warning: {len(read['truncated'])} input file(s) are truncated, only their readable lines are "
                   f"in the memory: {', '.join(read['truncated'])}", err=True)
    if (read.get("skipped") or {}).get("unreadable"):
        typer.echo(f"warning: {read['skipped']['unreadable']} input file(s) could not be read and are not in the "
                   "memory (see the warnings above)", err=True)


@app.command("info")
def info(directory: Path = typer.Argument(..., help="Memory directory."),
         as_json: bool = typer.Option(False, "--json", help="Print every manifest as JSON.")) -> None:
    """Describe a memory: corpus, tokenizer, chunks, encoder, index and neighbour tables."""
    from burrow.memory import Memory

    mem = Memory(directory)
    data = mem.info()
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    m = data["memory"]
    tok = data["tokenizer"] or {}
    typer.echo(f"memory      {directory}")
    typer.echo(f"documents   {m['n_docs']:,}   tokens {m['n_tokens']:,}   chunks {m['n_chunks']:,} "
               f"(m = {m['chunk_size']})")
    corpus = m.get("corpus") or {}
    if corpus:
        typer.echo(f"corpus      {corpus.get('bytes', 0):,} bytes read; skipped {corpus.get('skipped', {})}")
    typer.echo(f"tokenizer   {tok.get('tokenizer_kind')} vocab {tok.get('vocab_size')} ({m['tokenizer']}); "
               f"exact round trip: {tok.get('roundtrip_exact')}")
    typer.echo(f"encoder     {m['encoder_config']['model']} dim {m['dim']} ({m['encoder']})")
    idx = data["index"]
    if idx is None:  # (its manifest deleted: a search says the same)
        typer.echo("index       missing (no index.manifest.json); re-run the `burrow memory build` command "
                   "that made the memory: it builds the index again")
    else:
        params = idx.get("search_params") or ""
        typer.echo(f"index       {idx.get('factory')} {params} squared L2, {idx.get('ntotal'):,} keys")
    for nb in data["neighbours"]:
        typer.echo(f"neighbours  {nb['name']} k={nb['k']} over {nb['n_chunks']:,} chunks "
                   f"(same-document exclusion: {nb['exclude_same_document']})")
    bm = data.get("bm25")
    if bm is None:
        typer.echo(f"bm25        none (build it with `burrow memory bm25 {directory}`)")
    elif "damaged" in bm:
        typer.echo(f"bm25        damaged ({bm['damaged']}); rebuild it: burrow memory bm25 {directory} --force")
    else:
        state = "up to date" if bm["up_to_date"] else \
            f"stale (the chunks changed) or a file damaged: rebuild it with `burrow memory bm25 {directory}`"
        typer.echo(f"bm25        {bm['n_chunks']:,} chunks, {bm['vocab_size']:,} terms ({state})")


@app.command("search")
def search(
    directory: Path = typer.Argument(..., help="Memory directory."),
    query: list[str] = typer.Argument(..., help="Query text(s)."),
    k: int = typer.Option(4, "-k", min=1, help="Neighbours per query."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
    width: int = typer.Option(240, "--width", min=1, help="Characters of each neighbour's text to show."),
    retriever: str = typer.Option("dense", "--retriever", help="dense (encoder keys, FAISS) or bm25."),
) -> None:
    """Nearest chunks of QUERY: rank, distance (squared L2, or −BM25 score), source, chunk and continuation."""
    from burrow.errors import BurrowError
    from burrow.memory import Memory

    if any(not q.strip() for q in query):  # an empty query's key is the encoder's bias: arbitrary chunks
        raise BurrowError("a query is empty; give the text to search for")
    from burrow.data.tokenizer import valid_text

    # a shell's bytes that are not UTF-8 reach Python as lone surrogates: --json wrote them as "\udcff", which
    # a reader cannot encode as UTF-8 again; they are searched and shown as U+FFFD (as the encoder reads them)
    if any(valid_text(q) != q for q in query):
        typer.echo("warning: a query is not valid UTF-8; its undecodable bytes are read as U+FFFD", err=True)
        query = [valid_text(q) for q in query]

    mem = Memory(directory)
    # no more neighbours than chunks (they would all be missing): -k 1000000000 allocated GBs, then failed
    res = mem.search(list(query), k=min(k, len(mem)), retriever=retriever)
    records = res.to_json()
    if as_json:
        typer.echo(json.dumps([{"query": q, "neighbours": r} for q, r in zip(query, records, strict=True)], indent=2))
        return
    for q, rows in zip(query, records, strict=True):
        typer.secho(f"query: {q}", bold=True)
        for r in rows:
            text = " ".join(r["text"].split())
            how = f"bm25={-r['distance']:.4f}" if retriever == "bm25" else f"d={r['distance']:.4f}"  # not −scores
            typer.echo(f"  {r['rank']:>2}  {how}  {r['source']} +{r['offset']} tokens")
            typer.echo(f"      {text[:width]}{'…' if len(text) > width else ''}")


@app.command("bm25")
def bm25(
    directory: Path = typer.Argument(..., help="Memory directory."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if up to date."),
) -> None:
    """Index the memory's chunks with BM25 (a lexical second retriever: `search --retriever bm25`)."""
    from burrow.memory import Memory
    from burrow.memory.bm25 import build_bm25

    m = build_bm25(Memory(directory), force=force)
    typer.echo(f"bm25 {directory}/bm25: {m['n_chunks']:,} chunks, {m['vocab_size']:,} terms")


@app.command("tokenize")
def tokenize(
    directory: Path = typer.Argument(..., help="Memory directory (its tokenizer is used)."),
    corpus: list[str] = typer.Argument(..., help="Files or folders to tokenize (e.g. a validation set)."),
    out: Path = out_option(..., "Token store directory to write."),
    text_field: str = TEXT_FIELD,
    txt_split: str = TXT_SPLIT,
    force: bool = typer.Option(False, "--force", help="Replace a token store of other inputs at -o."),
) -> None:
    """Tokenize another corpus with the memory's tokenizer into a token store (for neighbours, eval)."""
    from burrow.memory import Memory
    from burrow.memory.build import tokenize_store

    store = tokenize_store(Memory(directory), corpus, out,
                           CorpusConfig(text_field=text_field, txt_split=txt_split),  # type: ignore[arg-type]
                           force=force)
    typer.echo(f"token store {out}: {store.n_docs:,} documents, {store.n_tokens:,} tokens")


@app.command("neighbours")
def neighbours(
    directory: Path = typer.Argument(..., help="Memory directory."),
    tokens: Path | None = typer.Option(None, "--tokens", help="Another token store (default: the memory's own)."),
    k: int = typer.Option(DEFAULT_K, "-k", min=1, help="Neighbours per chunk."),
    name: str | None = typer.Option(None, "--name",
                                    help="Table name (default: 'self', or the store's folder and a path hash)."),
    force: Force = False,
) -> None:
    """Precompute k neighbours for every chunk (same-document exclusion for the memory's own chunks)."""
    from burrow.memory import Memory
    from burrow.memory.build import compute_neighbours

    mem = Memory(directory)
    _check_table_k(k, len(mem))
    path, m = compute_neighbours(mem, k=k, target=tokens, name=name, force=force)
    typer.echo(f"neighbours {m['name']} k={k}: {m['n_chunks']:,} chunks → {path} "
               f"(same-document exclusion: {m['exclude_same_document']}, missing: {m['missing']})")


def _check_table_k(k: int, n_chunks: int) -> None:
    """A neighbour table holds k columns per chunk: more than the memory's chunks are all missing (and -k 1000000000
    allocated GBs, then failed)."""
    if k > n_chunks:
        raise BurrowError(f"-k {k:,} is more neighbours than the memory's {n_chunks:,} chunks; give at most "
                          f"{n_chunks:,}")


def register(root_app: typer.Typer) -> None:
    """Add the ``memory`` command group to the root ``burrow`` app."""
    root_app.add_typer(app, name="memory")
