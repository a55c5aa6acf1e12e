# Factory's commands. `make run` and `make test` are all a fresh Debian machine (root) needs.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.factory/dagster

.PHONY: install services run test lint dev clean-state

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@python3 -m venv --help >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-venv)
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

services: install
	$(BIN)/factory services up

run: services  ## build, test and record the example matrix, then show it
	$(BIN)/factory run

test: services  ## the whole test suite (unit + integration on the real engine and registry)
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

dev: services  ## the Dagster UI on http://127.0.0.1:3000
	$(BIN)/python -c "from factory.settings import Settings; from factory_assets.instance import prepare_dagster_home; prepare_dagster_home(Settings.from_env())"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000
