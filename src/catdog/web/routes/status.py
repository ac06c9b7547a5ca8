"""Health, readiness, status, the served model's metrics, data set counts, retraining state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, JSONResponse

from catdog.db import queries
from catdog.instance import instance_name
from catdog.ml.artifacts import METRICS_JSON, PLOTS_DIR, served_metrics_path
from catdog.ml.data import count_class_files
from catdog.ml.precision import cpu_description
from catdog.settings import Settings
from catdog.timefmt import iso_utc
from catdog.web.deps import AdminDep, DiskDep, ServiceDep, SessionDep, SettingsDep
from catdog.web.disk import DiskWatch
from catdog.web.openapi import ADMIN, error_responses
from catdog.web.schemas import HealthAnswer, ReadyAnswer, StatusAnswer
from catdog.web.service import ModelService

router = APIRouter(tags=["status"])


def format_uptime(seconds: float) -> str:
    """3723 -> "1h 2m 3s" (days shown when there are any)."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours}h {minutes}m {secs}s"


@router.get("/health", summary="Liveness: the process answers", response_model=HealthAnswer)
async def health() -> dict[str, Any]:
    return {"status": "ok", "instance": instance_name(), "timestamp": iso_utc()}


@router.get(
    "/ready",
    summary="Readiness: 503 until the model is loaded and warmed up",
    response_model=ReadyAnswer,  # documents the body; the route answers its JSONResponse as it is
    responses=error_responses(503, e503="the model is loading, warming up or failed to load (`phase`, `error`)"),
)
async def ready(service: ServiceDep) -> JSONResponse:
    body = {"ready": service.ready, "phase": service.state.phase, "timestamp": iso_utc()}
    if service.state.error:
        body["error"] = service.state.error
    return JSONResponse(
        body, status_code=200 if service.ready else 503, headers=None if service.ready else {"Retry-After": "5"}
    )


@router.get(
    "/api/status", summary="System status, uptime and counters (from the database)", response_model=StatusAnswer
)
def status(service: ServiceDep, session: SessionDep, settings: SettingsDep, disk: DiskDep) -> dict[str, Any]:
    uptime = time.time() - service.state.started_at
    predictor = service.predictor
    retrain = queries.retrain_summary(session)
    return {
        "status": "healthy" if service.ready else service.state.phase,
        "instance": instance_name(),
        "model_loaded": service.ready,
        "uptime": format_uptime(uptime),
        "uptime_seconds": round(uptime, 1),
        "total_predictions": queries.count_predictions(session),
        "total_retrains": retrain["total_retrains"],
        "is_retraining": retrain["is_retraining"],
        "model_version": predictor.version if predictor else None,
        "registry_version": (service.served().get("production") or {}).get("version"),
        "backbone": predictor.config.backbone if predictor else None,
        "precision": predictor.precision if predictor else None,
        "model_dir": model_source(service, settings),  # a name, never a server path (kept for old clients)
        "has_metrics": _metrics_file(service) is not None,
        "queue_depth": service.in_flight,
        "batching": {
            "max_batch_size": settings.max_batch_size,
            "max_batch_wait_ms": settings.max_batch_wait_ms,
            "max_queue_size": settings.max_queue_size,
        },
        "cpu": cpu_description(),
        "disk": _disk(disk, service),  # the state folder's free space; full: writes fail (507)
        "timestamp": iso_utc(),
    }


def _disk(watch: DiskWatch, service: ModelService) -> dict[str, Any]:
    """{"free_bytes", "total_bytes", "full", "last_write_error"} of the state folder (catdog.web.disk)."""
    if service.writer is not None:
        stats = service.writer.stats()
        watch.note_writer(stats.pending, stats.last_error)
    return dict(watch.status())


@router.get(
    "/api/metrics",
    summary="The served model's evaluation on held-out data",
    responses=error_responses(404, e404="the served model has no evaluation (metrics.json)"),
)
def model_metrics(service: ServiceDep) -> dict[str, Any]:
    path = _metrics_file(service)
    if path is None:
        raise HTTPException(404, f"the served model has no {METRICS_JSON}: run `catdog evaluate --save`")
    data = json.loads(path.read_text())
    plots = service.model_dir / PLOTS_DIR
    return {
        "accuracy": data["accuracy"],
        "precision": data["precision"],
        "recall": data["recall"],
        "f1_score": data["f1"],
        "roc_auc": data.get("roc_auc"),
        "log_loss": data.get("log_loss"),
        "confusion_matrix": data.get("confusion_matrix"),
        "n": data.get("n"),
        "evaluated_precision": (data.get("model") or {}).get("precision", "fp32"),
        "test_data": _without_root(data.get("data")),
        "model_version": service.predictor.version if service.predictor else None,
        "plots": {p.stem: f"/api/metrics/plots/{p.name}" for p in sorted(plots.glob("*.png"))},
        "timestamp": iso_utc(path.stat().st_mtime),
    }


# Monitors often probe with HEAD: the same answer as GET (status and headers) without a body.
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)


def model_source(service: ModelService, settings: Settings) -> str | None:
    """Where the served model comes from, without server paths: "models:/catdog/3" (MLflow's model URI
    of the registry version) or "pinned:<folder name>" (CATDOG_PINNED_MODEL); None while loading."""
    if service.predictor is None:
        return None
    version = (service.served().get("production") or {}).get("version")
    if version is not None:
        return f"models:/{settings.registered_model}/{version}"
    return f"pinned:{service.model_dir.name}"


def _metrics_file(service: ModelService) -> Path | None:
    """The evaluation of the graph that serves (int8 or fp32), else of the other graph."""
    return served_metrics_path(service.model_dir, service.predictor.precision if service.predictor else "fp32")


@router.get(
    "/api/metrics/plots/{name}",
    summary="One of the served model's plots (PNG)",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, e404="no plot of that name")},
)
def model_plot(name: str, service: ServiceDep) -> FileResponse:
    folder = service.model_dir / PLOTS_DIR
    known = {p.name: p for p in folder.glob("*.png")} if folder.is_dir() else {}
    if name not in known:  # the name is matched against the folder, never joined into a path
        raise HTTPException(404, f"no plot named {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return FileResponse(known[name], media_type="image/png")


@router.get("/api/dataset-stats", summary="Images per class in the training, test and upload folders")
def dataset_stats(settings: SettingsDep) -> dict[str, Any]:
    data: Path = settings.data_dir
    return {
        "training": count_class_files(data / "train"),
        "testing": count_class_files(data / "test"),
        "retraining": count_class_files(settings.state_dir / "uploads"),
        "data_dir": data.name,  # the data set's folder name, never the server's path (as /api/status's model_dir)
        "timestamp": iso_utc(),
    }


@router.get(
    "/api/auth/check",
    summary="Whether the admin token is right (the pages check it)",
    dependencies=[AdminDep],
    responses=ADMIN,
)
async def auth_check() -> dict[str, bool]:
    return {"ok": True}


def _without_root(data: Any) -> Any:
    """The evaluation's data entry with its folder named, not the server's path to it."""
    if not isinstance(data, dict) or not isinstance(data.get("root"), str):
        return data
    return data | {"root": Path(data["root"]).name}
