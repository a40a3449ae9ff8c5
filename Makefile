# Set-up and everyday commands; every target creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/agentflight: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install up test lint bench chromium reliability
install: $(BIN)/agentflight

up: install
	$(BIN)/agentflight up

# The browser tests drive Debian's Chromium through Playwright (no browser download): install it once.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

test: install chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/ingest.py

# The reliability and security checks at full size (10 SIGKILLs, 10,000 fuzzed requests, 3x overload, 10-minute soak), as a table.
reliability: install chromium
	$(BIN)/python -m bench.reliability
