# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The project's own Dagster home (run history, sensor cursors, pool limits) and data.
export DAGSTER_HOME := $(CURDIR)/data/dagster_home
UI_PORT ?= 3000

.PHONY: setup demo test ui bench drift-eval signals-eval judge-eval budget-eval lint lock llm-setup phoenix-setup clean-demo

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

## Run the whole product on the bundled demo data, through Dagster, and print what it found.
demo: setup
	$(BIN)/python -m eval_pipeline.demo

## Lint and run every test (integration tests run when their set-up is present).
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## Open the Dagster UI on the same Dagster home and DuckDB file that `make demo` used.
ui: setup
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

## Print the benchmark figures (ratios against a baseline measured in the same run).
bench: setup
	$(BIN)/python -m bench

## Simulate judges of known quality: kappa interval coverage, trust status, judge-swap detection.
judge-eval: setup
	$(BIN)/python -m bench.judge_trust_eval

## The drift evaluation harness: traffic with known truth (20 seeds per kind) through the
## real incident code; prints coverage, delay, false alarms, notifications and causes.
drift-eval: setup
	$(BIN)/python -m bench.drift_eval

## The signals evaluation: known regressions and clean traffic through the real signals code.
signals-eval: setup
	$(BIN)/python -m bench.signals_eval

## Fixed 200 judged a day vs the budgeted sampler, side by side, on the drift harness's traffic.
budget-eval: setup
	$(BIN)/python -m bench.budget_eval

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check eval_pipeline eval_pipeline_tests bench

## Re-pin every dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/eval_pipeline_lock_venv
	$(PYTHON) -m venv /tmp/eval_pipeline_lock_venv
	/tmp/eval_pipeline_lock_venv/bin/pip install --quiet '.[dev]'
	/tmp/eval_pipeline_lock_venv/bin/pip freeze --exclude eval_pipeline > requirements.lock
	rm -rf build

## The local model server for the LLM-judge integration test (llama.cpp + SmolLM2-135M).
llm-setup:
	bash scripts/setup_llm_server.sh

## The local Arize Phoenix server environment for the Phoenix integration tests.
phoenix-setup:
	bash scripts/setup_phoenix.sh

## Remove everything the demo made (store, inboxes, Dagster run history) to start over.
clean-demo:
	rm -rf data/demo data/inbox data/feedback_inbox data/eval.duckdb data/eval.duckdb.wal
	find data/dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
