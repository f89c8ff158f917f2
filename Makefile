# `make demo`: set up and run the main job against the built-in emulator on SQLite.
# `make test`: set up and run the whole test suite (lint, format check, pytest).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := .demo

.PHONY: setup demo test clean

$(BIN)/etl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/etl

setup: $(BIN)/etl

# The demo: start the emulator on a free port, create a SQLite store in .demo/, then run the
# minutely job twice, as cron would: the first run records the dispatches and curtails the sites of
# the active one (the log handler prints what each site should do); the second finds nothing new.
# Then the record of what was done, and the health check.
demo: setup
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@$(BIN)/etl sandbox --port 0 > $(DEMO_DIR)/sandbox.log 2>&1 & pid=$$!; \
	trap 'kill $$pid' EXIT; \
	for i in $$(seq 50); do grep -q http $(DEMO_DIR)/sandbox.log && break; sleep 0.1; done; \
	cat $(DEMO_DIR)/sandbox.log; \
	export VOLTUS_API_URL=$$(grep -o 'http://[0-9.:]*' $(DEMO_DIR)/sandbox.log) VOLTUS_API_KEY=secret \
	       ETL_DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DIR)/etl.db; \
	set -ex; \
	$(BIN)/etl db upgrade; \
	$(BIN)/etl run; \
	$(BIN)/etl run; \
	$(BIN)/etl report curtailments --format csv; \
	$(BIN)/etl status

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
