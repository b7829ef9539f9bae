# The two commands of the README: `make demo` and `make test`. Both create .venv themselves.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?= configs/demo.yaml

.PHONY: venv demo test bench clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) (about 90 s on a fresh machine) ..."
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@rm -f $(VENV)/.installed-*; touch $@

demo: venv
	$(VENV)/bin/mrnet run --config $(CONFIG)

test: venv
	$(VENV)/bin/python -m pytest -q tests

bench: venv
	$(VENV)/bin/python bench/run_all.py

clean-demo:
	rm -rf artifacts/demo
