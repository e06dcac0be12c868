"""Corpus readers: formats, provenance, and every bad input counted with the right reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from burrow.data.corpus import CorpusConfig, CorpusStats, read_corpus
from burrow.errors import BurrowError


def read(paths, **cfg):
    stats = CorpusStats()
    docs = list(read_corpus(paths, CorpusConfig(**cfg), stats))
    return docs, stats


def test_text_markdown_and_folder_recursion(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha text\n", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("# beta\n", encoding="utf-8")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    docs, stats = read([tmp_path])
    assert [d.text for d in docs] == ["alpha text\n", "# beta\n"]
    assert docs[0].source.endswith("a.txt:line 1") and docs[0].id == "a.txt#0"
    assert stats.documents == 2 and stats.bytes == len("alpha text\n# beta\n")


def test_invalid_utf8_repaired_or_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"good line\n\nbad \xff\xfe byte\n")
    docs, stats = read([tmp_path / "bad.txt"], txt_split="blank-line")
    assert [d.text for d in docs] == ["good line\n", "bad \ufffd\ufffd byte\n"]
    assert stats.repaired_utf8 == 1 and not stats.skipped
    docs, stats = read([tmp_path / "bad.txt"], txt_split="blank-line", invalid_utf8="skip")
    assert [d.text for d in docs] == ["good line\n"]
    assert stats.skipped == {"invalid_utf8": 1} and stats.skipped_bytes == len(b"bad \xff\xfe byte\n")


def test_binary_and_empty_are_skipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.txt").write_text("  \n\n", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("real words\n", encoding="utf-8")
    docs, stats = read([tmp_path])
    assert [d.text for d in docs] == ["real words\n"]
    assert stats.skipped == {"binary": 1, "empty": 1}
    assert "skipped 2" in stats.summary() and "binary 1" in stats.summary()


def test_jsonl_gz_fields_ids_and_bad_lines(tmp_path: Path) -> None:
    rows = [{"body": "first doc", "id": "x1", "title": "One"}, {"body": "second doc"}, {"other": 1}]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    docs, stats = read([tmp_path / "c.jsonl.gz"], text_field="body")
    assert [(d.id, d.text, d.title) for d in docs] == [("x1", "first doc", "One"), ("c.jsonl.gz#1", "second doc", None)]
    assert docs[1].source.endswith("c.jsonl.gz:line 2")
    assert stats.skipped == {"no_body_field": 1, "bad_json": 1}


def test_jsonl_without_the_text_field_is_refused(tmp_path: Path) -> None:
    # A folder of notes and a JSONL whose text is under "body": the JSONL's records were skipped one by one
    # and the memory was built from the notes alone, the file lost in a "no_text_field 30" count.
    (tmp_path / "note.txt").write_text("a note\n", encoding="utf-8")
    rows = [{"body": f"doc {i}", "title": f"T{i}", "n": i} for i in range(3)]
    (tmp_path / "notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(BurrowError, match=r"notes.jsonl: none of its 3 records has a 'text' field "
                                          r"\(its text fields: body, title\); .* --text-field"):
        read([tmp_path])
    docs, _ = read([tmp_path], text_field="text,body")
    assert sorted(d.text for d in docs) == ["a note\n", "doc 0", "doc 1", "doc 2"]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["p one", "", "p three"]}), tmp_path / "t.parquet")
    docs, stats = read([tmp_path / "t.parquet"])
    assert [d.text for d in docs] == ["p one", "p three"]
    assert docs[1].source.endswith("t.parquet:row 2") and stats.skipped == {"empty": 1}
    with pytest.raises(BurrowError, match="no column 'body'"):
        read([tmp_path / "t.parquet"], text_field="body")


def test_wikitext_articles_split_on_top_level_headings(tmp_path: Path) -> None:
    text = " = First = \n\n Some text . \n\n = = Sub = = \n\n more . \n = Second = \n\n other . \n"
    (tmp_path / "wiki.tokens").write_text(text, encoding="utf-8")
    docs, _ = read([tmp_path / "wiki.tokens"])
    assert [d.title for d in docs] == ["First", "Second"]
    assert "".join(d.text for d in docs) == text
    assert docs[1].source.endswith(":line 8")


def test_crlf_files_bom_and_unicode_line_separators(tmp_path: Path) -> None:
    """A CRLF WikiText file still splits at its titles; a line holding U+2028 or a form feed stays one line;
    a UTF-8 byte-order mark costs a JSONL file no record and a text file no character."""
    text = " = First = \r\n\r\n Some text . \r\n = Second = \r\n\r\n other . \r\n"
    (tmp_path / "crlf.tokens").write_bytes(text.encode("utf-8"))
    docs, _ = read([tmp_path / "crlf.tokens"])
    assert [d.title for d in docs] == ["First", "Second"] and "".join(d.text for d in docs) == text
    (tmp_path / "lines.txt").write_text("one\u2028still one\x0cand still\ntwo\n", encoding="utf-8")
    docs, _ = read([tmp_path / "lines.txt"], txt_split="line")
    assert [d.text for d in docs] == ["one\u2028still one\x0cand still", "two"]
    assert docs[1].source.endswith(":line 2")
    bom = b"\xef\xbb\xbf"
    (tmp_path / "bom.jsonl").write_bytes(bom + b'{"text": "first doc"}\n{"text": "second doc"}\n')
    (tmp_path / "bom.txt").write_bytes(bom + b"A text file.\n")
    docs, stats = read([tmp_path / "bom.jsonl", tmp_path / "bom.txt"])
    assert [d.text for d in docs] == ["first doc", "second doc", "A text file.\n"] and not stats.skipped


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BurrowError, match="no such file"):
        read([tmp_path / "nope.txt"])
    (tmp_path / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(BurrowError, match="no readable corpus files"):
        read([tmp_path])


def test_an_empty_path_or_a_bare_string_is_refused_not_read(tmp_path, monkeypatch) -> None:
    """Path("") is the working folder: `eval -d ''` read every file in it; a bare string was read one character
    at a time (`build_memory("corpus", …)`: "c: no such file or folder")."""
    from burrow.data.corpus import expand_inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("Owls hunt at night.\n", encoding="utf-8")
    for bad, needle in (([""], "empty"), (["  "], "empty"), ("notes.txt", "not one string")):
        with pytest.raises(BurrowError, match=needle):
            expand_inputs(bad)
    assert expand_inputs(["notes.txt"]) == ["notes.txt"]


def test_burrows_own_artefacts_in_a_corpus_folder_are_not_corpus(tmp_path: Path) -> None:
    """A memory built inside its corpus folder (-o corpus/mem) read its own manifests on a re-run: the inputs
    changed every time, so every re-run rebuilt it all; `corpus clean -o out/clean.jsonl.gz` then `memory build
    out/` read clean.report.md as a document, quoting the documents clean removed (decontamination's too)."""
    from burrow.artefacts import write_manifest
    from burrow.data.corpus import expand_inputs

    (tmp_path / "a.txt").write_text("real words\n", encoding="utf-8")
    mem = tmp_path / "mem"
    (mem / "tokens").mkdir(parents=True)
    (mem / "tokens" / "documents.jsonl").write_text('{"id": "a.txt#0", "bytes": 11}\n', encoding="utf-8")
    (mem / "notes.md").write_text("written before the build ended\n", encoding="utf-8")
    write_manifest(mem, "tokenizer", vocab_size=400)
    write_manifest(mem / "tokens", "tokens", n_docs=1)
    (tmp_path / "clean.jsonl.gz").write_bytes(gzip.compress(b'{"text": "kept"}\n'))
    (tmp_path / "clean.report.md").write_text("# removed\nan evaluation passage\n", encoding="utf-8")
    (tmp_path / "clean.report.json").write_text('{"documents_in": 2}', encoding="utf-8")
    (tmp_path / "notes.report.md").write_text("a report of the user's own, no clean output beside it\n")
    (tmp_path / "app.manifest.json").write_text('{"name": "not burrow\'s"}', encoding="utf-8")
    names = [Path(f).relative_to(tmp_path).as_posix() for f in expand_inputs([tmp_path])]
    assert names == ["a.txt", "app.manifest.json", "clean.jsonl.gz", "notes.report.md"]
    docs, _ = read([tmp_path / "clean.report.md"])  # a file named on its own is read as given
    assert [d.text for d in docs] == ["# removed\nan evaluation passage\n"]
