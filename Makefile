# Two commands set everything up on a fresh machine with Python 3.11 and make:
#   make run    the whole stack (PostgreSQL, Redis, web, worker, beat, Flower)
#   make test   the whole test suite against real services
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test bench bench-quick soak screenshots lint typecheck format clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devstack run

test: lint
	$(BIN)/python -m devstack test -- $(PYTEST_ARGS)

# Throughput and latency against the machine's own limits (see docs/BENCHMARKS.md).
bench: $(STAMP)
	$(BIN)/python -m bench.run --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.metrics_read --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.rate_limit --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.routing --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.ordering --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.tracing --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.scale --write docs/BENCHMARKS.md

# A small run (under two minutes); `make test` runs it as a smoke check, without thresholds.
bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# A chaos soak (about 10 minutes; too long for CI): workers, Redis, PostgreSQL and the consumer
# killed and stopped under load; checks nothing is lost (see docs/BENCHMARKS.md).
soak: $(STAMP)
	$(BIN)/python -m bench.soak --write docs/BENCHMARKS.md

# The admin screenshots in docs/screenshots/, taken by the browser test.
screenshots: $(STAMP)
	SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m devstack test -- tests/test_browser.py tests/portal/test_portal_browser.py

# Style, formatting and the import rules of docs/ARCHITECTURE.md (run by `make test` first).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory typecheck

# mypy with the Django and DRF stubs (pyproject: tool.mypy). Not yet in `make test`: it still
# reports errors the stubs and the code disagree on (issue 13).
typecheck: $(STAMP)
	WEBHOOKS_ENV=dev DATABASE_URL=postgresql://unused@127.0.0.1:1/unused $(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .import_linter_cache .ruff_cache .hypothesis *.egg-info build
