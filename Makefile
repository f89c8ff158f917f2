# `make demo`: set up and run the main job against the built-in emulator on SQLite.
# `make test`: set up and run the whole test suite (lint, format check, pytest): what CI runs. The
# quick tests run 4 at a time on both databases, then the slow ones (real processes, timing) one
# at a time.
# `make test-fast`: the everyday loop: lint, and the unit and store tests on SQLite alone (no
# PostgreSQL needed), 4 at a time.
# `make console`: the web console over the demo's store (`make demo` makes one if there is none),
# on loopback at the address it prints, until Ctrl-C.
# `make demo-push`: the push path: `etl serve` registered with the emulator, which POSTs a webhook
# when a dispatch appears; etl looks it up and curtails within a second, no poll involved.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := .demo

.PHONY: setup tools demo demo-push console test test-fast clean

$(BIN)/etl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/etl

setup: $(BIN)/etl

# What the tests drive beyond Python, from Debian's packages, installed here when missing (as
# root; otherwise it says what to install): Chromium and its chromedriver for the console's
# browser tests, and promtool (the prometheus package) for the alert rules' tests.
TOOLS := chromium chromedriver promtool
tools:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	[ -z "$$missing" ] && exit 0; \
	packages="chromium chromium-driver prometheus"; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's $$packages (for$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$packages >/dev/null; \
	else \
	  echo "the tests need$$missing: sudo apt-get install $$packages"; exit 1; \
	fi

console: setup
	@test -f $(DEMO_DIR)/etl.db || $(MAKE) --no-print-directory demo
	ETL_DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DIR)/etl.db $(BIN)/etl console --listen 127.0.0.1:0

test: setup tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 4 -m "not slow"
	$(BIN)/pytest -m slow

test-fast: setup
	$(BIN)/ruff check .
	ETL_TEST_DATABASES=sqlite $(BIN)/pytest -n 4 -m "not slow" tests/unit tests/store

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
