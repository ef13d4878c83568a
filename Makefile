# helmrelease-operator. `make demo` and `make test` are the two commands a new machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(CURDIR)/$(VENV)/bin:$(PATH)

include tools/versions.env
TOOLS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/helmrelease-operator
export HELMRELEASE_TOOLS_CACHE := $(TOOLS_CACHE)

PYTEST_ARGS ?=

.PHONY: help install tools test test-unit test-integration lint docs manifests demo demo-down bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## Create .venv and install the package editable with dev dependencies

tools: ## Build/install the pinned helm, helm3, kubectl, kube-apiserver, etcd, registry into the cache; link into bin/
	@./tools/build.sh

test: install tools ## The whole suite: unit and integration against a real control plane, helm and registry
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a broken suite, not a pass" >&2; fi; exit $$rc

test-unit: install ## Unit tests only (no external binaries)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install tools ## Integration tests only
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: install ## ruff, mypy --strict, import-linter layer contract
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: install ## Regenerate docs/reference/ (the HelmRelease fields from the CRD, the commands from the CLI)
	$(PY) -m tests.support.crd_reference
	$(PY) -m tests.support.cli_reference

manifests: install tools ## Regenerate manifests/plain/ (plain YAML, kustomize-able) from the chart with helm template
	$(PY) -m tests.support.plain_manifests

demo: install tools ## Start control plane, registry, chart repo; run operator + sidecar; apply examples and watch
	$(PY) -m tests.support.demo

bench: install tools ## Benchmarks (ratios against plain helm in the same run)
	$(PY) -m tests.bench

clean: ## Remove the venv, bin/ links and build leftovers (the tools cache stays; it is keyed by version)
	rm -rf $(VENV) bin .pytest_cache .mypy_cache .ruff_cache .hypothesis build operator/*.egg-info
