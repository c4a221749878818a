# One entry point for people and CI. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help setup lock test lint format typecheck pytest deploy-check dashboard demo sim bench bench-pipeline bench-sim bench-l1 bench-http bench-scale bench-jobs bench-upload bench-egress bench-scopes bench-soak clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock scripts/setup scripts/setup-deploy-tools
	@PYTHON=$(PYTHON) scripts/setup
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install taogate with its dev extras from uv.lock (and redis-server if missing)

lock: setup  ## upgrade every locked version on purpose (uv lock --upgrade), then install from the new lock
	$(BIN)/uv lock --upgrade
	@PYTHON=$(PYTHON) scripts/setup
	@touch $(STAMP)

test: setup  ## the whole suite: ruff (lint + format), mypy --strict, pytest with coverage
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest --cov --cov-report=term:skip-covered

lint: setup  ## ruff lint + format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

pytest: setup  ## only the tests (ARGS="-k name" to pick)
	$(BIN)/pytest $(ARGS)

deploy-check: setup  ## only the checks of Dockerfile, deploy/ (hadolint, kustomize, kubernetes-validate, promtool)
	$(BIN)/pytest tests/deploy $(ARGS)

dashboard: setup  ## regenerate deploy/grafana/taogate.json from deploy/grafana/build_dashboard.py
	$(BIN)/python deploy/grafana/build_dashboard.py

demo: setup  ## the demo: simulator + gateway + live load, then a naive client (~1 min, no Redis)
	$(BIN)/taogate demo

sim: setup  ## run the TOP simulator with taogate.example.toml
	$(BIN)/taogate sim --config taogate.example.toml

bench: bench-sim bench-l1 bench-pipeline bench-http bench-scale bench-jobs bench-upload bench-egress bench-scopes bench-soak  ## every benchmark (JSON + PNG under bench/results/)

bench-pipeline: setup  ## taogate bench: cold flood, hot Zipf, outage, duplicate burst, L1 micro (~3 min)
	$(BIN)/taogate bench

bench-sim: setup  ## the simulator's capacity: 40-id calls per second at zero latency
	$(BIN)/python bench/sim_capacity.py

bench-http: setup  ## the HTTP hit path vs bare Starlette, and cold-miss latency (needs wrk)
	@command -v wrk >/dev/null || { echo "bench-http needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/http_hit.py

bench-scale: setup  ## three replicas on one Redis: cold flood, then Redis stopped for 10 s (~2 min)
	$(BIN)/python bench/scale_out.py

bench-jobs: setup  ## a 100,000-id bulk job under interactive Zipf load, one replica (~3 min)
	$(BIN)/python bench/bulk_job.py

bench-upload: setup  ## /healthz latency while a 20 MB job body uploads (~30 s)
	$(BIN)/python bench/job_upload.py

bench-egress: setup  ## six keys on one egress capped at 20 calls/s, judged per IP (~1 min)
	$(BIN)/python bench/egress_cap.py

bench-scopes: setup  ## account cap (1 and 3 replicas), IP whitelist move, method ban, on the simulator (~3 min)
	$(BIN)/python bench/scopes.py $(ARGS)

bench-soak: setup  ## 10 min of mixed load and an upstream outage: RSS, tasks, fds stay flat (ARGS="--seconds 60")
	$(BIN)/python bench/soak.py $(ARGS)

bench-l1: setup  ## L1 eviction: LRU vs W-TinyLFU on Zipf traces
	$(BIN)/python bench/l1_eviction.py

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage
