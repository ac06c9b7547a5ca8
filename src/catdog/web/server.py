"""`catdog serve`: check the model, prepare shared state for the workers, run uvicorn.

Flags become CATDOG_* variables before uvicorn starts, so every worker process (a fresh
interpreter) reads the same settings. Metrics of all workers meet in PROMETHEUS_MULTIPROC_DIR,
emptied at each start.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from catdog.ml.artifacts import MODEL_ONNX, ModelConfig, ModelDirError
from catdog.settings import get_settings
from catdog.web import MULTIPROC_ENV  # never catdog.web.metrics here: it must see the variable set


def serve(
    model: str | None = None, host: str | None = None, port: int | None = None, workers: int | None = None
) -> int:
    """Run the platform until interrupted. Raises ModelDirError (exit 2) for a missing or unbuilt model."""
    overrides: dict[str, object] = {"CATDOG_HOST": host, "CATDOG_PORT": port, "CATDOG_WORKERS": workers}
    if model is not None:
        model_dir = Path(model).resolve()
        overrides |= {"CATDOG_MODELS_DIR": model_dir.parent, "CATDOG_DEFAULT_MODEL": model_dir.name}
    os.environ.update({name: str(value) for name, value in overrides.items() if value is not None})
    settings = get_settings()
    model_dir = settings.default_model_dir
    ModelConfig.load(model_dir)  # one clear line now rather than a server that never gets ready
    if not (model_dir / MODEL_ONNX).is_file():
        raise ModelDirError(f"{model_dir / MODEL_ONNX} is missing: build it with `catdog build {model_dir}`")
    os.environ[MULTIPROC_ENV] = str(_fresh_metrics_dir(settings.state_dir / "prometheus"))

    import uvicorn

    url = f"http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{settings.port}"
    print(
        f"catdog: serving {model_dir} on {url} with {settings.workers} worker(s); "
        f"/ready answers 200 once the model is warm; pages: {url}/  API: {url}/docs",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        "catdog.web.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


def _fresh_metrics_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
