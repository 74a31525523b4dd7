# The two commands of the README. Both bootstrap .venv from a clean clone (nothing installed
# by hand), then run the headline target or the test suite. Only `make test` adds the
# `cluster` extra (Snakemake's SLURM, Google Batch, Kubernetes and GCS plugins), which the
# cluster tests need; the SLURM test itself installs slurm-wlm and munge from apt when absent.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test test-cluster lint setup setup-cluster clean-results

setup: $(VENV)/.installed
setup-cluster: $(VENV)/.installed-cluster

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-cluster: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test,cluster]"
	touch $@

# Rules call `python -m pipeline_lib`: the venv's python must come first on PATH (what
# `. .venv/bin/activate` does by hand).
export PATH := $(abspath $(BIN)):$(PATH)

run: setup  ## headline target on config.yaml
	snakemake --cores $(CORES)

test: setup-cluster  ## the whole test suite (includes snakemake --lint, snakefmt --check, the cluster tests)
	python -m pytest

test-cluster: setup-cluster  ## only the tests against real servers (SLURM daemons, GCS-API server)
	python -m pytest -m cluster

lint: setup
	snakemake --lint
	snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results .snakemake
