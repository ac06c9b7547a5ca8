# catdog's images, one file, one target per role:
#   serve   the API (`catdog serve`): ONNX Runtime, no PyTorch, no compilers, no data, no test tools
#   worker  the job worker (`catdog worker`): serve's environment plus the CPU PyTorch build for training
#   mlflow  the MLflow tracking server on PostgreSQL with artifacts on S3
#
#   docker build --target serve -t catdog-serve .        (compose.yaml builds all three)
#
# BASE_IMAGE is any Debian bookworm with Python 3.11 and `python3 -m venv`: the official
# python:3.11-slim-bookworm by default; where no registry answers, the one that
# deploy/docker/base-image.sh makes from the Debian mirror (`make compose-up` does it).
# Wheels: deploy/docker/wheels/ (empty in git) is searched first; WHEELS_ONLY=1 installs from it
# alone (offline). Where PyPI is reached through a private CA, pass its bundle as the build secret
# `pipca` (compose.yaml does, from CATDOG_PIP_CA).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- a Python with a virtual environment, shared by every role ------------------------------------
FROM ${BASE_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
# tini: PID 1 that forwards SIGTERM and reaps children; curl-free health checks use Python
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --system --gid 10001 catdog \
    && useradd --system --uid 10001 --gid catdog --home-dir /var/lib/catdog --shell /usr/sbin/nologin catdog
# pipinstall: pip with the wheelhouse first, the private CA when given, offline when WHEELS_ONLY=1
COPY deploy/docker/pipinstall /usr/local/bin/pipinstall

# --- the serving environment: catdog's runtime dependencies, no PyTorch ------------------------------
FROM python AS serve-env
ARG WHEELS_ONLY=0
COPY deploy/docker/requirements-serve.txt /tmp/requirements/
RUN --mount=type=bind,source=deploy/docker/wheels,target=/wheels \
    --mount=type=secret,id=pipca \
    pipinstall -r /tmp/requirements/requirements-serve.txt
COPY pyproject.toml README.md /tmp/catdog/
COPY src /tmp/catdog/src
RUN --mount=type=bind,source=deploy/docker/wheels,target=/wheels \
    --mount=type=secret,id=pipca \
    pipinstall setuptools==84.2.1 \
    && pipinstall --no-deps --no-build-isolation /tmp/catdog \
    && pip uninstall -y -q setuptools \
    && rm -rf /tmp/catdog /tmp/requirements

# --- training: the worker's environment, which also builds the shipped models' graphs ----------------
FROM serve-env AS train-env
ARG WHEELS_ONLY=0
# torch first, exactly the CPU build (the plain PyPI wheel is the multi-GB CUDA one)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY deploy/docker/requirements-worker.txt /tmp/requirements/
RUN --mount=type=bind,source=deploy/docker/wheels,target=/wheels \
    --mount=type=secret,id=pipca \
    TORCH_INDEX_URL="$TORCH_INDEX_URL" pipinstall --torch torch==2.13.0 \
    && pipinstall -r /tmp/requirements/requirements-worker.txt \
    && python -c "import torch; assert torch.version.cuda is None, 'a CUDA build of torch was installed'" \
    && rm -rf /tmp/requirements

# the shipped models' graphs, from the pinned, hash-checked weight wheels (as `make run` does)
FROM train-env AS models
ARG WHEELS_ONLY=0
ENV CATDOG_CACHE_DIR=/opt/catdog/cache CATDOG_MODELS_DIR=/opt/catdog/models
COPY models /opt/catdog/models
RUN --mount=type=bind,source=deploy/docker/wheels,target=/wheels \
    --mount=type=secret,id=pipca \
    pipinstall --env-only catdog weights \
    && catdog build /opt/catdog/models/* \
    && rm -rf /opt/catdog/cache/precision.json /opt/catdog/cache/features

# the serving environment without pip: nothing is installed at run time
FROM serve-env AS serve-venv
RUN pip uninstall -y -q pip

# --- what serve and worker share: the built models, the folders, the entry point --------------------
FROM python AS runtime
COPY --from=models /opt/catdog/models /opt/catdog/models
ENV CATDOG_MODELS_DIR=/opt/catdog/models \
    CATDOG_STATE_DIR=/var/lib/catdog \
    CATDOG_DATA_DIR=/data
RUN mkdir -p /var/lib/catdog /var/cache/catdog/features /data \
    && chown catdog:catdog /var/lib/catdog /var/cache/catdog/features
WORKDIR /var/lib/catdog
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "catdog"]

# --- serve ------------------------------------------------------------------------------------------
FROM runtime AS serve
COPY --from=serve-venv /opt/venv /opt/venv
ENV CATDOG_CACHE_DIR=/var/lib/catdog/cache \
    CATDOG_HOST=0.0.0.0 \
    CATDOG_PORT=8000 \
    CATDOG_WORKER=false
USER catdog
VOLUME ["/var/lib/catdog"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CATDOG_PORT', '8000')}/health\", timeout=4)"]
CMD ["serve"]

# --- worker -----------------------------------------------------------------------------------------
FROM runtime AS worker
COPY --from=train-env /opt/venv /opt/venv
COPY --from=models --chown=catdog:catdog /opt/catdog/cache /opt/catdog/cache
ENV CATDOG_CACHE_DIR=/opt/catdog/cache \
    CATDOG_FEATURES_DIR=/var/cache/catdog/features \
    CATDOG_WORKER_NICE=0
USER catdog
VOLUME ["/var/lib/catdog", "/var/cache/catdog/features"]
# healthy: the job queue's storage (Redis, PostgreSQL or SQLite) answers with these settings
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "from catdog.jobs.queue import make_queue; from catdog.settings import get_settings; make_queue(get_settings()).huey.pending_count()"]
CMD ["worker"]

# --- mlflow -----------------------------------------------------------------------------------------
FROM python AS mlflow
ARG WHEELS_ONLY=0
COPY deploy/docker/requirements-mlflow.txt /tmp/requirements/
RUN --mount=type=bind,source=deploy/docker/wheels,target=/wheels \
    --mount=type=secret,id=pipca \
    pipinstall -r /tmp/requirements/requirements-mlflow.txt \
    && rm -rf /tmp/requirements
COPY deploy/docker/mlflow-server.py /usr/local/bin/mlflow-server.py
ENV MLFLOW_DISABLE_TELEMETRY=true
USER catdog
WORKDIR /tmp
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["tini", "--", "python", "/usr/local/bin/mlflow-server.py"]
