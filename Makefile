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

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" sh scripts/demo.sh $(DEMO_DIR)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
