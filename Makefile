# The two commands of the README. Both bootstrap .venv from a clean clone (nothing installed
# by hand), then run the headline target or the test suite.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test lint setup clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# Rules call `python -m pipeline_lib`: the venv's python must come first on PATH (what
# `. .venv/bin/activate` does by hand).
export PATH := $(abspath $(BIN)):$(PATH)

run: setup  ## headline target on config.yaml
	snakemake --cores $(CORES)

test: setup  ## the whole test suite (includes snakemake --lint and snakefmt --check)
	python -m pytest

lint: setup
	snakemake --lint
	snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results .snakemake
