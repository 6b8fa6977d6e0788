# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing
# (with the optional ray and mlflow extras, so that their tests run too).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deepwe-installed
DEMO_OUT ?= runs/demo

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast lint venv clean-venv schemas bench bench-quick

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,mlflow]'
	@touch $(STAMP)

venv: $(STAMP)

DASHBOARD_PORT ?= 8501

# The demo ends by serving the dashboard on the demo model (Ctrl+C stops it); DEEPWE_NO_DASHBOARD=1 skips it.
demo: $(STAMP)
	$(BIN)/deepwe demo --out $(DEMO_OUT)
ifneq ($(DEEPWE_NO_DASHBOARD),1)
	$(BIN)/deepwe dashboard $(DEMO_OUT)/model $(DEMO_OUT)/cohort/cohort.yaml --predictions $(DEMO_OUT)/predictions.parquet --port $(DASHBOARD_PORT)
endif

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The full suite, as CI runs it, with the 20 slowest tests listed at the end.
test: lint
	$(BIN)/python -m pytest --durations=20

# The daily loop: every test but the slow ones (end-to-end training, torchrun, kill -9, the demo,
# the browser) and those reading ../shared/data.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not realdata" -q --durations=10

# Benchmarks: write benchmarks/results/{full,quick}/ (RESULTS.md, results.json, one folder per part).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.suite

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.suite --quick

schemas: $(STAMP)
	$(BIN)/python -m data_schemas.export

clean-venv:
	rm -rf $(VENV)
