"""End to end in a real browser: Debian's chromium (headless, driven by Playwright) loads the page, types a
prompt, clicks Generate, and sees the text stream in and a retrieved source appear beside a chunk.

Needs the `chromium` Debian package (`make test` installs it when it can) and the `playwright` Python
package (never `playwright install`: the test drives the system chromium). Set BURROW_SKIP_BROWSER=1 to
skip it; otherwise a missing browser is a failure, so CI cannot pass without running it.
"""

from __future__ import annotations

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
        finally:
            browser.close()
