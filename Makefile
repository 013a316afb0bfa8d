# Portunus: forwarder + benchmark harness.
# `make sweep` and `make test` work as the first commands on a fresh Debian 12
# machine: both run `make setup` first when it has not run yet.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
RUN    ?= $(shell date +%Y-%m-%d)-$(shell hostname -s)
RESULTS ?= results/$(RUN)
PYTEST_ARGS ?=

.PHONY: setup test lint headline sweep report gate bench baseline clean cleanup

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-system.sh
	./scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check portunus harness tests
	$(BIN)/mypy

headline: setup
	$(BIN)/portunus-bench run configs/headline.yaml --out $(RESULTS)
	$(BIN)/portunus-bench report $(RESULTS)

sweep: setup
	$(BIN)/portunus-bench run configs/headline.yaml --out $(RESULTS)
	$(BIN)/portunus-bench run configs/ab.yaml --out $(RESULTS)
	$(BIN)/portunus-bench run configs/capped.yaml --out $(RESULTS)
	$(BIN)/portunus-bench run configs/sweep.yaml --out $(RESULTS)
	$(BIN)/portunus-bench report $(RESULTS)

report: setup
	$(BIN)/portunus-bench report $(RESULTS)

cleanup: setup
	$(BIN)/portunus-bench cleanup

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
