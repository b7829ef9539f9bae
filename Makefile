# The two commands of the README: `make demo` and `make test`. Both create .venv themselves.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?= configs/demo.yaml
PARAMS ?= {"config": "$(CONFIG)"}
GPU_POOL_SLOTS ?= 1
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000

# The embedded default: Airflow on SQLite under .airflow/, this checkout's dags/, LocalExecutor.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR ?= LocalExecutor
export MRNET_HOME := $(CURDIR)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv airflow-db demo demo-lib airflow mlflow test test-fast lint bench clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) (about 90 s on a fresh machine) ..."
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@rm -f $(VENV)/.installed-*; touch $@

airflow-db: venv  ## migrate the Airflow metadata DB and create the gpu pool (idempotent)
	@mkdir -p $(AIRFLOW_HOME)
	@airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -30 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	@airflow pools set gpu $(GPU_POOL_SLOTS) "PG train/embed slots (mrnet)" > /dev/null

demo: airflow-db  ## mrnet_retrain on the demo config through `airflow dags test`, then its summary
	@echo airflow dags test mrnet_retrain -c \''$(PARAMS)'\'"  (full log: $(AIRFLOW_HOME)/demo.log)"
	@airflow dags test mrnet_retrain -c '$(PARAMS)' 2>&1 | tee $(AIRFLOW_HOME)/demo.log \
	  | grep --line-buffered -E "\[DAG TEST\] end task|\[mrnet|Error|DagRun Finished" \
	  | sed -E 's/^[0-9T:.-]+Z \[[a-z ]+\] //; s/ +\[(mrnet[a-z.]*|airflow[a-z._]*)\] loc=.*//'
	@$(VENV)/bin/mrnet summary --config $(CONFIG)

demo-lib: venv  ## the same stages without Airflow (mrnet run)
	$(VENV)/bin/mrnet run --config $(CONFIG)

airflow: airflow-db  ## airflow standalone on localhost with this checkout's DAGs
	@AIRFLOW_PORT=$(AIRFLOW_PORT) MLFLOW_PORT=$(MLFLOW_PORT) scripts/airflow_standalone.sh

mlflow: venv  ## MLflow UI on the embedded default's tracking DB (runs, registry, aliases)
	@echo "MLflow UI: http://localhost:$(MLFLOW_PORT)  (Ctrl-C stops it)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/artifacts/demo/mlflow.db --port $(MLFLOW_PORT)

test: venv  ## every test, the slow ones (full runs, Airflow, the distributed stack) included
	$(VENV)/bin/python -m pytest -q tests

test-fast: venv  ## the tests not marked slow: the library's units in a few minutes
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

lint: venv  ## ruff (pinned in requirements.txt; settings in pyproject.toml)
	$(VENV)/bin/ruff check .

bench: venv
	$(VENV)/bin/python bench/run_all.py

clean-demo:
	rm -rf artifacts/demo
