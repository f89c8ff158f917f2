# `make demo`: set up and run the main job against the built-in emulator on SQLite.
# `make test`: set up and run the whole test suite (lint, format check, types, pytest): what CI
# runs. The quick tests run 4 at a time on both databases, then the slow ones (real processes,
# timing) 2 at a time, then those of them marked `serial` (tight time bounds) one at a time.
# `make test-fast`: the everyday loop: lint, types, and the unit and store tests on SQLite alone
# (no PostgreSQL needed), 4 at a time.
# `make console`: the web console over the demo's store (`make demo` makes one if there is none),
# on loopback at the address it prints, until Ctrl-C.
# `make demo-devices`: the device edge against simulated equipment: a battery inverter over
# Modbus TCP (pymodbus's server) curtailed, metered and restored, and a thermostat aggregator's
# OpenADR VEN (OpenLEADR's client) told of a dispatch and of its cancellation, its readings sent
# (etl/sandbox/device_demo.py; docs/modbus.md, docs/openadr.md).
# `make demo-push`: the push path: `etl serve` registered with the emulator, which POSTs a webhook
# when a dispatch appears; etl looks it up and curtails within a second, no poll involved.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := .demo

.PHONY: setup tools demo demo-devices demo-push console test test-fast clean

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

# The demo: start the emulator on a free port (the built-in scenario, plus a dispatch that ended
# 90 minutes ago, before this store existed: the scenario's `commands` record that its sites'
# controllers took its curtail and restore then, since the emulated load drops only for a
# curtail taken), create a SQLite store in .demo/, then run the minutely job twice, as cron would:
# the first run records the dispatches and curtails the sites of the active one (the log handler
# prints what each site should do); the second finds nothing new. Then the record of what was
# done, the health check, the metered response to the dispatch that ended (etl fetch --telemetry,
# etl report performance) and its picture, .demo/earlier.svg. Between the runs and the record, the
# site's own meter readings of the last 10 minutes go to Voltus through the outbox (etl telemetry
# send), as a customer-metered site's would.
demo: setup
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@$(BIN)/python -c 'import json, sys; from importlib.resources import files; s = json.loads(files("etl.sandbox").joinpath("scenario.json").read_text()); d = dict(s["dispatches"][0], id="earlier", start_time="now-2h", end_time="now-90m"); s["dispatches"].append(d); s["commands"] = [{"action": a, "site_id": x["id"], "dispatch_id": "earlier", "commitment_kw": x["commitment"], "received_at": t} for a, t in (("curtail", "now-2h"), ("restore", "now-90m")) for x in d["sites"]]; json.dump(s, open(sys.argv[1], "w"))' $(DEMO_DIR)/scenario.json
	@$(BIN)/etl sandbox --port 0 --scenario $(DEMO_DIR)/scenario.json > $(DEMO_DIR)/sandbox.log 2>&1 & pid=$$!; \
	trap 'kill $$pid' EXIT; \
	for i in $$(seq 50); do grep -q http $(DEMO_DIR)/sandbox.log && break; sleep 0.1; done; \
	cat $(DEMO_DIR)/sandbox.log; \
	export VOLTUS_API_URL=$$(grep -o 'http://[0-9.:]*' $(DEMO_DIR)/sandbox.log) VOLTUS_API_KEY=secret \
	       ETL_DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DIR)/etl.db; \
	set -ex; \
	$(BIN)/etl db upgrade; \
	$(BIN)/etl run; \
	$(BIN)/etl run; \
	$(BIN)/etl fetch --sites --quiet; \
	$(BIN)/python -c 'import time; f = "%Y-%m-%dT%H:%M:%SZ"; end = int(time.time()) // 30 * 30; print("site_id,meter_id,timestamp,kw"); [print(f"asdf,asdf-m1,{time.strftime(f, time.gmtime(end - 30 * i))},{40 + i % 3}") for i in range(20, 0, -1)]' > $(DEMO_DIR)/readings.csv; \
	$(BIN)/etl telemetry send $(DEMO_DIR)/readings.csv; \
	$(BIN)/etl report curtailments --format csv; \
	$(BIN)/etl status; \
	$(BIN)/etl fetch --telemetry --quiet; \
	$(BIN)/etl report performance; \
	$(BIN)/etl audit --dispatch earlier --chart $(DEMO_DIR)/earlier.svg

demo-devices: setup
	@rm -rf $(DEMO_DIR)/devices
	@$(BIN)/python -m etl.sandbox.device_demo $(DEMO_DIR)/devices

demo-push: setup
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR) && cp etl/sandbox/scenario.json $(DEMO_DIR)/scenario.json
	@$(BIN)/etl sandbox --port 0 --scenario $(DEMO_DIR)/scenario.json > $(DEMO_DIR)/sandbox.log 2>&1 & sandbox=$$!; \
	trap 'kill $$sandbox $$serve 2>/dev/null' EXIT; \
	for i in $$(seq 50); do grep -q http $(DEMO_DIR)/sandbox.log && break; sleep 0.1; done; \
	export VOLTUS_API_URL=$$(grep -o 'http://[0-9.:]*' $(DEMO_DIR)/sandbox.log) VOLTUS_API_KEY=secret \
	       ETL_DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DIR)/etl.db; \
	port=$$($(BIN)/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	set -e; \
	$(BIN)/etl db upgrade; \
	$(BIN)/etl serve --every 600 --listen 127.0.0.1:$$port 2> $(DEMO_DIR)/serve.log & serve=$$!; \
	for i in $$(seq 100); do grep -q listening $(DEMO_DIR)/serve.log && break; sleep 0.1; done; \
	sleep 1; \
	$(BIN)/etl webhooks register http://127.0.0.1:$$port/voltus/webhook; \
	echo "+ a new dispatch, push1, appears in the emulator's scenario"; \
	$(BIN)/python -c 'import json, sys; p = sys.argv[1]; s = json.load(open(p)); d = dict(s["dispatches"][0], id="push1", start_time="now", end_time="now+30m"); s["dispatches"].append(d); json.dump(s, open(p, "w"))' $(DEMO_DIR)/scenario.json; \
	sleep 2; \
	echo "+ what etl serve logged"; cat $(DEMO_DIR)/serve.log; \
	$(BIN)/etl audit --dispatch push1

console: setup
	@test -f $(DEMO_DIR)/etl.db || $(MAKE) --no-print-directory demo
	ETL_DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DIR)/etl.db $(BIN)/etl console --listen 127.0.0.1:0

test: setup tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 4 -m "not slow"
	$(BIN)/pytest -n 2 -m "slow and not serial"
	$(BIN)/pytest -m "slow and serial"

test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	ETL_TEST_DATABASES=sqlite $(BIN)/pytest -n 4 -m "not slow" tests/unit tests/store

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
