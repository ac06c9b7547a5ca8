"""Uploads, retraining on the real job queue, the registry, feedback and auth, through the HTTP API."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from catdog.jobs.queue import make_queue
from catdog.settings import Settings, get_settings
from catdog.web.app import create_app
from catdog.web.state import app_state

from ..conftest import CATSDOGS
from .conftest import wait_ready

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def platform(tmp_path: Path, shipped_lite0: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app serving the registry's production (the tiny Lite0), with a job consumer thread beside it."""
    env = {
        "STATE_DIR": tmp_path / "state",
        "DATA_DIR": CATSDOGS,
        "MODELS_DIR": shipped_lite0,
        "DEFAULT_MODEL": "efficientnet_lite0",
        "RETRAIN_MIN_PER_CLASS": 5,
        "GATE_TOLERANCE": 1.0,
        "GATE_MIN_ACCURACY": 0.0,  # the tiny fixture model is judged on 12 test photos: no floor
        "ADMIN_TOKEN": TOKEN,
        "JOB_HEARTBEAT_SECONDS": 0.2,
        "REGISTRY_POLL_SECONDS": 0.5,
        "MAX_BATCH_SIZE": 4,
        "MAX_QUEUE_SIZE": 16,
        "MAX_BATCH_FILES": 16,
        "WARMUP_BATCH_SIZES": "1,4",
        "DB_FLUSH_SECONDS": 0.05,
        "DRIFT_INTERVAL_SECONDS": 3600,
        "LOG_FORMAT": "text",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"CATDOG_{name}", str(value))
    settings = get_settings()  # the job reads the same variables in the consumer
    consumer = make_queue(settings).huey.create_consumer(workers=1, worker_type="thread", periodic=False)
    consumer.start()
    try:
        with TestClient(create_app(settings, configure_logs=False)) as client:
            wait_ready(client)
            yield client
    finally:
        consumer.stop(graceful=True)


def _files(paths: list[Path], field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (path.name, path.read_bytes(), "image/jpeg")) for path in paths]


def _photos(split: str, class_dir: str, n: int) -> list[Path]:
    return sorted((CATSDOGS / split / class_dir).iterdir())[:n]


def _new_photos(folder: Path, class_dir: str, n: int, fmt: str = "JPEG") -> list[Path]:
    """Photos in neither split: the training photos mirrored, saved anew (new content)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, source in enumerate(_photos("train", class_dir, n)):
        target = folder / f"new-{class_dir}-{i}.{fmt.lower()}"
        ImageOps.mirror(Image.open(source).convert("RGB")).save(target, fmt)
        out.append(target)
    return out


def _wait_job(client: TestClient, timeout: float = 240) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get("/api/retrain-status").json()
        if not status["is_retraining"]:
            return status
        time.sleep(0.3)
    raise TimeoutError(status)


def test_admin_routes_need_the_token(platform: TestClient) -> None:
    for method, path in (
        ("post", "/api/upload-training-data?class_name=cats"),
        ("post", "/api/retrain"),
        ("post", "/api/retrain/x/cancel"),
        ("post", "/api/models/1/promote"),
        ("post", "/api/models/rollback"),
        ("post", "/api/models/1/reference"),
        ("delete", "/api/uploads/abc"),
        ("post", "/api/uploads/abc/keep"),
        ("post", "/api/feedback/x/add-to-training"),
        ("get", "/api/auth/check"),
    ):
        missing = platform.request(method, path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == "Bearer" and "token" in missing.json()["detail"]
        wrong = platform.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403, path
    assert platform.get("/api/auth/check", headers=ADMIN).json() == {"ok": True}
    assert platform.get("/api/models").status_code == 200  # reading stays open


def test_uploads_are_checked_stored_once_and_counted(platform: TestClient, tmp_path: Path) -> None:
    url = "/api/upload-training-data?class_name=cats"
    new = _new_photos(tmp_path, "cats", 2)
    bad = [("files", ("notes.jpg", b"this is text", "image/jpeg"))]
    answer = platform.post(url, files=_files(new) + bad, headers=ADMIN).json()
    assert answer["uploaded"] == 2 and answer["class"] == "cats" and answer["duplicates"] == []
    assert [entry["status"] for entry in answer["files"]] == ["stored", "stored"]
    assert answer["errors"][0]["filename"] == "notes.jpg" and "text" in answer["errors"][0]["error"]
    again = platform.post(url, files=_files(new[:1] + _photos("train", "cats", 1)), headers=ADMIN).json()
    assert again["uploaded"] == 0
    assert [d["duplicate_of"] for d in again["duplicates"]] == ["upload", "training set"]
    assert (
        platform.post("/api/upload-training-data?class_name=birds", files=_files(new), headers=ADMIN).status_code == 400
    )
    leak = platform.post(url, files=_files(_photos("test", "cats", 1)), headers=ADMIN).json()
    assert leak["uploaded"] == 0 and "test split" in leak["errors"][0]["error"]
    stats = platform.get("/api/dataset-stats").json()
    assert stats["retraining"] == {"cats": 2, "dogs": 0, "total": 2}
    listed = platform.get("/api/uploads").json()
    assert listed["total"] == 2 and {u["filename"] for u in listed["uploads"]} == {p.name for p in new}
    first = listed["uploads"][0]
    stored = platform.get(first["url"])
    assert stored.status_code == 200 and Image.open(io.BytesIO(stored.content)).size == (
        first["width"],
        first["height"],
    )
    assert platform.delete(f"/api/uploads/{first['sha256']}", headers=ADMIN).json()["deleted"] == first["sha256"]
    assert platform.delete(f"/api/uploads/{first['sha256']}", headers=ADMIN).status_code == 404
    assert platform.get("/api/dataset-stats").json()["retraining"]["total"] == 1


def test_a_retrain_through_the_api_registers_a_version_and_serving_switches(
    platform: TestClient, tmp_path: Path
) -> None:
    new_dogs = _new_photos(tmp_path, "dogs", 2)
    platform.post("/api/upload-training-data?class_name=dogs", files=_files(new_dogs), headers=ADMIN)
    before = platform.get("/api/models").json()
    assert before["production"] == 1 and [v["version"] for v in before["versions"]] == [1]
    started = platform.post("/api/retrain", headers=ADMIN)
    assert started.status_code == 202
    assert platform.get("/api/retrain-status").json()["is_retraining"] is True  # already when the reply left
    assert platform.post("/api/retrain", headers=ADMIN).status_code == 409
    uploaded = platform.get("/api/uploads").json()["uploads"][0]["sha256"]
    assert platform.delete(f"/api/uploads/{uploaded}", headers=ADMIN).status_code == 409  # it trains on them
    predicted = platform.post("/api/predict", files=_files(_photos("test", "cats", 1), "file"))
    assert predicted.status_code == 200  # serving goes on meanwhile
    done = _wait_job(platform)
    assert done["status"] == "succeeded", done["error"]
    assert done["job_id"] == started.json()["job_id"] and done["total_retrains"] == 1 and done["last_retrain"]
    assert done["version"] == 2 and done["gate"]["promoted"] and 0 <= done["metrics"]["accuracy"] <= 1
    check = done["label_check"]  # the uploads' labels were checked before they trained
    assert check["enabled"] and check["checked"] == 2 and check["trained"] + check["quarantined"] == 2
    assert check["base_issues"]["of"] == 32 and isinstance(check["base_issues"]["examples"], list)
    after = platform.get("/api/models").json()
    assert after["production"] == 2 and after["versions"][0]["source"] == "retrain"
    # the gate's checks, with their figures, on the version; the reference is the first production
    checks = after["versions"][0]["gate"]["checks"]
    assert [c["name"] for c in checks] == ["production", "mcnemar", "reference", "floor"]
    assert all(c["passed"] for c in checks) and after["versions"][0]["gate"]["verdict"] == "promoted"
    assert checks[0]["accuracy"] == after["versions"][0]["metrics"]["accuracy"] and checks[2]["reference_version"] == 1
    assert {"b", "c", "p_value", "alpha", "n"} <= set(checks[1]) and 0 <= checks[1]["p_value"] <= 1
    assert after["reference"]["version"] == 1 and after["reference"]["source"] == "first production"
    assert after["versions"][1]["gate"]["checks"] == []  # the shipped version was never gated
    assert platform.post("/api/models/99/reference", headers=ADMIN).status_code == 404
    moved = platform.post("/api/models/2/reference", headers=ADMIN)
    accuracies = [v["metrics"]["accuracy"] for v in after["versions"]]  # [v2, v1], registered (None: none)
    if accuracies[1] is None or accuracies[0] >= accuracies[1]:  # only upwards
        assert moved.json() == {"reference": 2, "previous": 1, "overridden_by_setting": None}
        assert platform.get("/api/models").json()["reference"]["source"] == "admin (API)"
    else:
        assert moved.status_code == 409 and "only moves up" in moved.json()["detail"]
    assert after["versions"][0]["data"]["uploads"] == 2
    new_id = after["versions"][0]["model_version"]
    deadline = time.time() + 60
    while platform.get("/api/models").json()["served"]["production"]["version"] != 2:
        assert time.time() < deadline, "serving never switched to the new production"
        time.sleep(0.3)
    answer = platform.post("/api/predict", files=_files(_photos("test", "dogs", 1), "file")).json()
    assert answer["model_version"] == new_id and answer["registry_version"] == 2
    plot = platform.get(next(iter(after["versions"][0]["plots"].values())))
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    rolled = platform.post("/api/models/rollback", headers=ADMIN).json()
    assert rolled == {"production": 1, "rolled_back_from": 2, "skipped": []}
    assert platform.post("/api/models/rollback", headers=ADMIN).status_code == 409
    assert platform.post("/api/models/2/promote", headers=ADMIN).json() == {"production": 2, "previous": 1}
    assert platform.post("/api/models/99/promote", headers=ADMIN).status_code == 404
    assert len(platform.get("/api/retrain/jobs").json()["jobs"]) == 1


def test_retrain_refuses_too_little_data_and_cancel_works(
    platform: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = app_state(platform.app)  # type: ignore[arg-type]
    settings: Settings = state.settings
    state.settings = settings.model_copy(update={"retrain_min_per_class": 1000})
    refused = platform.post("/api/retrain", headers=ADMIN)
    assert refused.status_code == 400 and "at least 1000 per class" in refused.json()["detail"]
    state.settings = settings
    job = platform.post("/api/retrain", headers=ADMIN).json()["job_id"]
    cancelled = platform.post(f"/api/retrain/{job}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
    final = _wait_job(platform)
    assert final["status"] == "cancelled" and final["job_id"] == job
    assert platform.post(f"/api/retrain/{job}/cancel", headers=ADMIN).status_code == 409
    assert platform.post("/api/retrain/nope/cancel", headers=ADMIN).status_code == 404
    unknown = platform.post("/api/retrain", json={"backbone": "resnet50"}, headers=ADMIN)
    assert unknown.status_code == 400 and "efficientnet_lite0" in unknown.json()["detail"]
    assert [v["version"] for v in platform.get("/api/models").json()["versions"]] == [1]


def test_feedback_counts_per_version_and_feeds_training(platform: TestClient, tmp_path: Path) -> None:
    photo = _new_photos(tmp_path, "cats", 1)
    answer = platform.post("/api/predict", files=_files(photo, "file")).json()
    wrong = "dog" if answer["predicted_class"] == "cat" else "cat"
    given = platform.post("/api/feedback", json={"prediction_id": answer["prediction_id"], "correct_label": wrong})
    assert given.status_code == 201 and given.json()["correct"] is False
    again = platform.post("/api/feedback", json={"prediction_id": answer["prediction_id"], "correct_label": "cat"})
    assert again.status_code == 409  # one verdict per prediction
    assert platform.post("/api/feedback", json={"prediction_id": "f" * 32, "correct_label": "cat"}).status_code == 404
    assert platform.post("/api/feedback", json={"prediction_id": "x", "correct_label": "cow"}).status_code == 422
    versions = platform.get("/api/monitoring").json()["versions"]
    mine = next(v for v in versions if v["model_version"] == answer["model_version"])
    assert mine["feedback"]["n"] == 1 and mine["feedback"]["accuracy"] == 0.0 and mine["registry_version"] == 1
    added = platform.post(f"/api/feedback/{given.json()['feedback_id']}/add-to-training", headers=ADMIN).json()
    assert added["status"] == "stored" and added["class"] == wrong + "s"
    uploads = platform.get("/api/uploads").json()["uploads"]
    assert uploads[0]["source"] == "feedback"
    test_photo = platform.post("/api/predict", files=_files(_photos("test", "dogs", 1), "file")).json()
    verdict = platform.post(
        "/api/feedback", json={"prediction_id": test_photo["prediction_id"], "correct_label": "dog"}
    )
    refused = platform.post(f"/api/feedback/{verdict.json()['feedback_id']}/add-to-training", headers=ADMIN)
    assert refused.status_code == 409 and "test split" in refused.json()["detail"]
    # a base-set dog said to be a cat is a label conflict, as an upload would be: nothing is added
    base_dog = platform.post("/api/predict", files=_files(_photos("train", "dogs", 1), "file")).json()
    flipped = platform.post("/api/feedback", json={"prediction_id": base_dog["prediction_id"], "correct_label": "cat"})
    conflict = platform.post(f"/api/feedback/{flipped.json()['feedback_id']}/add-to-training", headers=ADMIN)
    assert conflict.status_code == 409 and "label conflict" in conflict.json()["detail"], conflict.text
    assert len(platform.get("/api/uploads").json()["uploads"]) == len(uploads)


def test_everything_is_there_after_a_restart(platform: TestClient, tmp_path: Path) -> None:
    """Registry, uploads, jobs and history live in the state folder and the database, not in the process."""
    new = _new_photos(tmp_path, "cats", 1)
    platform.post("/api/upload-training-data?class_name=cats", files=_files(new), headers=ADMIN)
    job = platform.post("/api/retrain", headers=ADMIN).json()["job_id"]
    platform.post(f"/api/retrain/{job}/cancel", headers=ADMIN)
    _wait_job(platform)
    answer = platform.post("/api/predict", files=_files(_photos("test", "dogs", 1), "file")).json()
    platform.post("/api/feedback", json={"prediction_id": answer["prediction_id"], "correct_label": "dog"})
    settings = app_state(platform.app).settings  # type: ignore[arg-type]
    with TestClient(create_app(settings, configure_logs=False)) as again:
        wait_ready(again)
        assert again.get("/api/uploads").json()["total"] == 1
        assert [j["job_id"] for j in again.get("/api/retrain/jobs").json()["jobs"]] == [job]
        assert again.get("/api/models").json()["production"] == 1
        versions = again.get("/api/monitoring").json()["versions"]
        assert sum(v["feedback"]["n"] for v in versions) == 1
        assert again.get("/api/status").json()["total_predictions"] >= 1


def test_unusual_uploads_are_stored_and_shown(platform: TestClient, tmp_path: Path) -> None:
    """A PNG whose text chunk is over Pillow's limit is stored (as predictions read it); a TIFF is shown as PNG."""
    source = Image.open(_photos("train", "dogs", 1)[0]).convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    info = PngInfo()
    info.add_text("Comment", "x" * 3_000_000, zip=True)  # 3 MB once decompressed; Pillow stops at 1 MB
    big_text = tmp_path / "big-text.png"
    source.save(big_text, "PNG", pnginfo=info)
    tiff = _new_photos(tmp_path, "dogs", 1, fmt="TIFF")[0]
    answer = platform.post("/api/upload-training-data?class_name=dogs", files=_files([big_text, tiff]), headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["errors"] == [], answer.json()
    assert answer.json()["uploaded"] == 2
    shown = {u["filename"]: u["url"] for u in platform.get("/api/uploads").json()["uploads"]}
    image = platform.get(shown[tiff.name])
    assert image.headers["content-type"] == "image/png" and Image.open(io.BytesIO(image.content)).format == "PNG"
    original = platform.get(shown[tiff.name] + "?original=true")
    assert Image.open(io.BytesIO(original.content)).format == "TIFF"


def test_uploads_carry_the_models_verdict_label_conflicts_and_quarantine(platform: TestClient, tmp_path: Path) -> None:
    """The served model's P(class) in the upload answer; a base-set cat sent as a dog is a conflict; Keep."""
    new_cats = _new_photos(tmp_path, "cats", 2)
    answer = platform.post("/api/upload-training-data?class_name=dogs", files=_files(new_cats), headers=ADMIN).json()
    for entry in answer["files"]:
        assert entry["status"] == "stored" and entry["predicted_class"] in ("cat", "dog")
        assert 0 <= entry["p_label"] <= 1 and entry["label_agrees"] == (entry["predicted_class"] == "dog")
        assert entry["conflict"] is False
    base_cat = _photos("train", "cats", 1)
    conflict = platform.post("/api/upload-training-data?class_name=dogs", files=_files(base_cat), headers=ADMIN).json()
    assert (
        conflict["uploaded"] == 0
        and len(conflict["conflicts"]) == 1
        and conflict["duplicates"] == conflict["conflicts"]
    )
    entry = conflict["conflicts"][0]
    assert (entry["status"], entry["duplicate_of"], entry["class"], entry["conflict"]) == (
        "conflict",
        "training set",
        "cats",
        True,
    )
    assert "base training set as cats" in entry["detail"] and entry["predicted_class"] in ("cat", "dog")
    listed = platform.get("/api/uploads").json()
    assert listed["quarantine"] == {"quarantined": 0, "kept": 0}
    for upload in listed["uploads"]:
        assert upload["quarantined"] is False and upload["quarantine_reason"] is None
        assert upload["predicted_class"] in ("cat", "dog") and 0 <= upload["p_label"] <= 1
    assert platform.get("/api/uploads?quarantined=true").json()["total"] == 0
    assert platform.get("/api/uploads?quarantined=false").json()["total"] == 2
    assert platform.get("/api/uploads?quarantined=maybe").status_code == 422
    sha = listed["uploads"][0]["sha256"]
    kept = platform.post(f"/api/uploads/{sha}/keep", headers=ADMIN)
    assert kept.status_code == 200 and kept.json()["upload"]["kept_by_admin"] is True
    assert kept.json()["quarantine"] == {"quarantined": 0, "kept": 1}
    assert platform.post("/api/uploads/nope/keep", headers=ADMIN).status_code == 404
