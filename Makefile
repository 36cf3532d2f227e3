# facecall — two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
STAMP  := $(VENV)/.installed

.PHONY: run test lint system-deps venv clean

# What the server needs to run; the test and lint tools come on top (`[dev]`).
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Start the all-in-one server (HTTP + WebSocket on 127.0.0.1:8080, SQLite ./facecall.db).
run: $(RUNTIME)
	$(VENV)/bin/facecall serve

## System packages the suite talks to (coturn's client tools, PostgreSQL, Redis). Root only.
system-deps:
	@bash scripts/system-deps.sh

## Set up everything and run the whole suite.
test: system-deps $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	bash scripts/run-tests.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

## Remove what setting up made. The server's database (./facecall.db) is data, not build
## output: it stays.
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
