"""Sources shown to users: the title, else the path relative to the corpus root, never a machine path."""

from __future__ import annotations

from types import SimpleNamespace

from burrow.memory.sources import corpus_roots, display_sources, fallback_roots, relative_source


def test_relative_to_the_deepest_root_keeping_the_line(tmp_path) -> None:
    roots = ["/data", "/data/wiki"]
    assert relative_source("/data/wiki/a/b.txt:line 12", roots) == "a/b.txt:line 12"
    assert relative_source("/data/c.parquet:row 3", roots) == "c.parquet:row 3"
    assert relative_source("/elsewhere/d.txt:line 1", roots) == "d.txt:line 1"  # outside every root: the name
    assert relative_source("hf:wikitext:row 4", roots) == "hf:wikitext:row 4"  # not a path: unchanged
    (tmp_path / "corpus").mkdir()
    (tmp_path / "one.txt").write_text("x")
    assert corpus_roots([str(tmp_path / "corpus"), str(tmp_path / "one.txt"), "missing"]) == [
        str(tmp_path.resolve()), str((tmp_path / "corpus").resolve())]


def test_titles_first_and_old_memories_use_the_common_directory() -> None:
    Doc = SimpleNamespace
    store = SimpleNamespace(docs=[Doc(source="/m/x/wiki/a.txt:line 2", title="Battle of Hastings"),
                                  Doc(source="/m/x/wiki/sub/b.txt:line 9", title=None),
                                  Doc(source="/m/x/wiki/c.txt:line 1", title="  ")])
    assert fallback_roots([d.source for d in store.docs]) == ["/m/x/wiki"]
    assert display_sources(store, {}) == ["Battle of Hastings", "sub/b.txt:line 9", "c.txt:line 1"]
    assert display_sources(store, {"corpus_roots": ["/m/x"]})[1] == "wiki/sub/b.txt:line 9"

