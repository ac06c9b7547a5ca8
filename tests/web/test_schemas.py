"""The typed answers (catdog.web.schemas): /openapi.json documents them, and real answers are exactly them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from catdog.registry import ModelVersionInfo
from catdog.settings import get_settings
from catdog.web import schemas
from catdog.web.app import create_app

from ..conftest import CATSDOGS
from .conftest import make_settings, wait_ready

CAT = CATSDOGS / "test" / "cats" / "cat.4002.jpg"
DOG = CATSDOGS / "test" / "dogs" / "dog.4003.jpg"
TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}

PREDICTION_FIELDS = {
    "prediction_id", "filename", "predicted_class", "class", "class_index", "probability", "confidence",
    "confidence_percentage", "is_pet", "pet_score", "is_valid", "message", "model_version", "registry_version",
    "precision", "cached", "explanation_url", "prediction_time", "timestamp",
}  # fmt: skip
ROUTES = {
    ("/api/predict", "post"): "PredictionAnswer",
    ("/api/predict/batch", "post"): "BatchAnswer",
    ("/api/status", "get"): "StatusAnswer",
    ("/health", "get"): "HealthAnswer",
    ("/ready", "get"): "ReadyAnswer",
    ("/api/models", "get"): "ModelsAnswer",
    ("/api/models/rollback", "post"): "RollbackAnswer",
    ("/api/models/{version}/promote", "post"): "PromoteAnswer",
    ("/api/models/{version}/reference", "post"): "ReferenceAnswer",
}


def json_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def exactly(model: type[BaseModel], body: dict[str, Any], *, optional: tuple[str, ...] = ()) -> None:
    """`body` validates as `model` and has every field of it (those in `optional` may be absent), no other."""
    model.model_validate(body)
    assert json_names(model) - set(optional) <= set(body) <= json_names(model), (model.__name__, sorted(body))


def test_openapi_documents_each_answer_with_its_model(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "state"), tmp_path / "no-model", configure_logs=False)
    spec = TestClient(app).get("/openapi.json").json()  # no life cycle: no model is needed for the schema
    for (path, method), name in ROUTES.items():
        answer = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{name}"}, (path, answer)
    components = spec["components"]["schemas"]
    prediction = components["PredictionAnswer"]
    assert set(prediction["properties"]) == PREDICTION_FIELDS | {"explanation"}
    assert set(prediction["required"]) == PREDICTION_FIELDS  # explanation: only with ?explain=true
    assert all(field.get("description") for field in prediction["properties"].values())
    entries = components["BatchAnswer"]["properties"]["predictions"]["items"]["oneOf"]  # one or the other
    assert {entry["$ref"].rsplit("/", 1)[1] for entry in entries} == {"PredictionAnswer", "PredictionErrorEntry"}
    assert set(components["PredictionErrorEntry"]["required"]) == {"filename", "error", "status_code"}
    assert set(components["ModelVersionEntry"]["required"]) == json_names(schemas.ModelVersionEntry)


def test_a_registry_version_dict_is_exactly_the_documented_entry(tmp_path: Path) -> None:
    info = ModelVersionInfo(
        version=3,
        model_version="efficientnet_lite0-0123abcd",
        backbone="efficientnet_lite0",
        model_dir=tmp_path,
        aliases=("production",),
        created_at="2025-01-01T00:00:00Z",
        run_id="abc",
        source="retrain",
        metrics={"accuracy": 0.9, "n": 12.0},
        tags={
            "gate_checks": '[{"name": "floor", "passed": true, "skipped": false, "detail": "ok", "min": 0.5}]',
            "data_counts": '{"cats": 4, "dogs": 5}',
            "plots": "roc_curve.png",
        },
    )
    entry = info.to_dict() | {"load_error": None}
    exactly(schemas.ModelVersionEntry, entry)
    dumped = schemas.ModelVersionEntry.model_validate(entry).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dumped == entry  # nothing dropped or changed: a check's own figures ("min") included


def test_real_prediction_status_and_health_answers_are_exactly_their_models(app_client: TestClient) -> None:
    plain = app_client.post("/api/predict", files={"file": ("dog.jpg", DOG.read_bytes(), "image/jpeg")}).json()
    exactly(schemas.PredictionAnswer, plain, optional=("explanation",))
    assert set(plain) == PREDICTION_FIELDS and plain["class"] == plain["predicted_class"] + "s"
    assert plain["registry_version"] is None  # a pinned model folder: null, and present
    explained = app_client.post(
        "/api/predict", files={"file": ("dog.jpg", DOG.read_bytes(), "image/jpeg")}, params={"explain": "true"}
    ).json()
    assert set(explained) == PREDICTION_FIELDS | {"explanation"} and explained["explanation"].startswith("data:")

    files = [("files", ("a.jpg", CAT.read_bytes(), "image/jpeg")), ("files", ("bad.txt", b"no image", "text/plain"))]
    batch = app_client.post("/api/predict/batch", files=files).json()
    exactly(schemas.BatchAnswer, batch)
    good, bad = batch["predictions"]
    exactly(schemas.PredictionAnswer, good, optional=("explanation",))
    assert set(good) == PREDICTION_FIELDS
    assert bad == {"filename": "bad.txt", "error": bad["error"], "status_code": 415}

    status = app_client.get("/api/status").json()
    exactly(schemas.StatusAnswer, status)
    for name, model in (("batching", schemas.BatchingSettings), ("cpu", schemas.CpuDescription)):
        exactly(model, status[name])
    exactly(schemas.DiskStatus, status["disk"])
    exactly(schemas.HealthAnswer, app_client.get("/health").json())
    exactly(schemas.ReadyAnswer, app_client.get("/ready").json(), optional=("error",))


@pytest.fixture
def registry_app(tmp_path: Path, shipped_lite0: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app serving the registry's production (the tiny Lite0, registered as version 1)."""
    env = {
        "STATE_DIR": tmp_path / "state",
        "DATA_DIR": CATSDOGS,
        "MODELS_DIR": shipped_lite0,
        "DEFAULT_MODEL": "efficientnet_lite0",
        "ADMIN_TOKEN": TOKEN,
        "MAX_BATCH_SIZE": 4,
        "MAX_QUEUE_SIZE": 16,
        "MAX_BATCH_FILES": 16,
        "WARMUP_BATCH_SIZES": "1",
        "DRIFT_INTERVAL_SECONDS": 3600,
        "LOG_FORMAT": "text",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"CATDOG_{name}", str(value))
    with TestClient(create_app(get_settings(), configure_logs=False)) as client:
        wait_ready(client)
        yield client


def test_real_model_registry_answers_are_exactly_their_models(registry_app: TestClient) -> None:
    models = registry_app.get("/api/models").json()
    exactly(schemas.ModelsAnswer, models)
    (version,) = models["versions"]
    exactly(schemas.ModelVersionEntry, version)
    exactly(schemas.GateReferenceEntry, models["reference"])
    exactly(schemas.ServedModel, models["served"]["production"])
    assert models["production"] == 1 and models["swap_error"] is None

    promoted = registry_app.post("/api/models/1/promote", headers=ADMIN)
    assert promoted.status_code == 200
    exactly(schemas.PromoteAnswer, promoted.json())
    # the shipped model has no test accuracy: ReferenceNotBetter carries its 409 (a 200 is in test_retrain_api)
    moved = registry_app.post("/api/models/1/reference", headers=ADMIN)
    assert moved.status_code == 409 and "test accuracy" in moved.json()["detail"], moved.text
    refused = registry_app.post("/api/models/rollback", headers=ADMIN)  # the error class carries its 409
    assert refused.status_code == 409 and set(refused.json()) == {"detail"}
    unknown = registry_app.post("/api/models/7/promote", headers=ADMIN)
    assert unknown.status_code == 404 and "7" in unknown.json()["detail"]
