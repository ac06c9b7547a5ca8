"""The API contract the spec's pages and load test rely on, every endpoint and every bad input."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from catdog.ml.predictor import Predictor
from catdog.web.app import create_app
from catdog.web.state import app_state

from ..conftest import CATSDOGS, FIXTURES
from .conftest import encode, make_settings, wait_ready

CAT = CATSDOGS / "test" / "cats" / "cat.4002.jpg"
DOG = CATSDOGS / "test" / "dogs" / "dog.4003.jpg"

SPEC_FIELDS = {
    "predicted_class": str,
    "class": str,
    "class_index": int,
    "probability": float,
    "confidence": float,
    "confidence_percentage": str,
    "prediction_time": float,
    "timestamp": str,
    "is_valid": bool,
    "is_pet": bool,
    "pet_score": float,
    "model_version": str,
    "prediction_id": str,
    "cached": bool,
}


def post(
    client: TestClient, data: bytes, name: str = "x.jpg", field: str = "file", ctype: str = "image/jpeg", **params
):
    return client.post("/api/predict", files={field: (name, data, ctype)}, params=params)


def png_bomb(width: int, height: int) -> bytes:
    """A valid, tiny, all-black PNG that would take width*height*3 bytes to decode."""
    compressor, row = zlib.compressobj(1), b"\x00" * (width * 3 + 1)
    raw = b"".join([compressor.compress(row) for _ in range(height)] + [compressor.flush()])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


# --- the prediction contract -------------------------------------------------------------------------
def test_predict_answers_every_spec_field_with_its_type(app_client: TestClient) -> None:
    response = post(app_client, DOG.read_bytes(), "dog.4003.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    for name, kind in SPEC_FIELDS.items():
        assert isinstance(body[name], kind), (name, body[name])
    assert body["predicted_class"] in {"cat", "dog"}
    assert body["class"] == body["predicted_class"] + "s"
    assert body["class_index"] == int(body["predicted_class"] == "dog")
    assert 0.5 <= body["confidence"] <= 1
    assert body["confidence_percentage"] == f"{body['confidence']:.2%}"
    assert body["timestamp"].endswith("Z") and body["cached"] is False
    assert response.headers["x-request-id"]


def test_served_probabilities_equal_the_predictor_on_the_same_files(app_client: TestClient, lite0_model: Path) -> None:
    paths = sorted((CATSDOGS / "test" / "cats").iterdir()) + sorted((CATSDOGS / "test" / "dogs").iterdir())
    expected = [p.probability for p in Predictor(lite0_model).predict(paths)]
    results: dict[int, float] = {}

    def ask(i: int) -> None:  # concurrently, so the server batches them together
        results[i] = post(app_client, paths[i].read_bytes(), paths[i].name).json()["probability"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(paths))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    np.testing.assert_allclose([results[i] for i in range(len(paths))], expected, atol=2e-5)


def test_a_repeated_image_is_answered_from_the_cache(app_client: TestClient) -> None:
    first = post(app_client, CAT.read_bytes()).json()
    again = post(app_client, CAT.read_bytes()).json()
    assert first["cached"] is False and again["cached"] is True
    assert again["probability"] == first["probability"]
    assert again["prediction_id"] != first["prediction_id"]
    assert again["prediction_time"] < 0.05


def test_a_picture_that_is_no_pet_still_gets_every_field(app_client: TestClient) -> None:
    body = post(app_client, (FIXTURES / "nonpet" / "coffee.jpg").read_bytes()).json()
    assert body["is_pet"] is False and body["is_valid"] is False and body["message"]
    assert isinstance(body["probability"], float) and body["confidence_percentage"].endswith("%")


def test_explain_returns_a_heat_map_inline_and_by_id(app_client: TestClient) -> None:
    body = post(app_client, DOG.read_bytes(), explain="true").json()
    assert body["explanation"].startswith("data:image/png;base64,")
    inline = Image.open(io.BytesIO(base64.b64decode(body["explanation"].split(",", 1)[1])))
    assert inline.format == "PNG" and inline.size[0] >= 64
    deadline = time.time() + 5
    while True:  # the explanation file is written off the request path
        response = app_client.get(body["explanation_url"])
        if response.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).format == "PNG"


def test_an_answer_without_explain_carries_no_map_yet_can_be_explained_later(app_client: TestClient) -> None:
    service = app_state(app_client.app).service  # type: ignore[arg-type]
    body = post(app_client, (FIXTURES / "pets" / "chelsea.jpg").read_bytes()).json()
    assert "explanation" not in body
    kept = None
    deadline = time.time() + 5
    while kept is None and time.time() < deadline:  # the input is kept off the request path
        kept = service.explanations.load(body["prediction_id"])
        time.sleep(0.05)
    assert kept is not None and kept.cam is None  # the raw input only: no map was drawn for it
    assert kept.image.shape == (224, 224, 3) and kept.model_version == body["model_version"]
    response = app_client.get(body["explanation_url"])  # drawn now, by the model that answered
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    inline = post(app_client, (FIXTURES / "pets" / "chelsea.jpg").read_bytes(), explain="true").json()
    assert inline["cached"] is True  # the same photo: answered from the cache, the map drawn from the kept input
    on_demand = base64.b64decode(inline["explanation"].split(",", 1)[1])
    assert Image.open(io.BytesIO(on_demand)).size == Image.open(io.BytesIO(response.content)).size


@pytest.mark.parametrize("prediction_id", ["0" * 32, "not-an-id", "..%2F..%2Fetc%2Fpasswd"])
def test_explain_of_an_unknown_id_is_a_json_404(app_client: TestClient, prediction_id: str) -> None:
    response = app_client.get(f"/api/explain/{prediction_id}")
    assert response.status_code == 404 and "detail" in response.json()


def test_batch_answers_one_entry_per_file_in_order_with_errors_of_their_own(app_client: TestClient) -> None:
    files = [
        ("files", ("a.jpg", CAT.read_bytes(), "image/jpeg")),
        ("files", ("bad.txt", b"not an image at all", "text/plain")),
        ("files", ("b.jpg", DOG.read_bytes(), "image/jpeg")),
    ]
    response = app_client.post("/api/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 3 and body["succeeded"] == 2 and body["failed"] == 1
    first, bad, third = body["predictions"]
    assert first["filename"] == "a.jpg" and first["predicted_class"] in {"cat", "dog"}
    assert bad["filename"] == "bad.txt" and bad["status_code"] == 415 and bad["error"]
    assert third["filename"] == "b.jpg" and "probability" in third


def test_a_batch_with_too_many_files_is_refused(lite0_model: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", max_batch_files=2)
    with TestClient(create_app(settings, lite0_model, configure_logs=False)) as client:
        wait_ready(client)
        files = [("files", (f"{i}.jpg", CAT.read_bytes(), "image/jpeg")) for i in range(3)]
        response = client.post("/api/predict/batch", files=files)
    assert response.status_code == 413 and "at most 2" in response.json()["detail"]


# --- bad input: a clear 4xx JSON, nothing stored, the server unharmed --------------------------------------
BAD_INPUTS = {
    "text": b"hello, I am not an image\n" * 20,
    "html": b"<html><script>alert(1)</script></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "zip": b"PK\x03\x04" + b"\x00" * 100,
    "empty": b"",
    "truncated jpeg": CAT.read_bytes()[: len(CAT.read_bytes()) // 3],
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_gets_a_4xx_json_detail(app_client: TestClient, kind: str, tmp_path: Path) -> None:
    response = post(app_client, BAD_INPUTS[kind], "../../etc/passwd" if kind == "text" else "x.jpg")
    assert 400 <= response.status_code < 500, (kind, response.status_code, response.text)
    assert isinstance(response.json()["detail"], str) and "\n" not in response.json()["detail"]
    assert app_client.get("/health").status_code == 200


def test_a_pixel_bomb_is_refused_quickly(app_client: TestClient) -> None:
    bomb = png_bomb(20000, 20000)  # 400 megapixels, 1.2 GB to decode, a few hundred KB to send
    started = time.perf_counter()
    response = post(app_client, bomb, "bomb.png", ctype="image/png")
    assert 400 <= response.status_code < 500 and "detail" in response.json()
    assert time.perf_counter() - started < 2


def test_an_upload_over_the_cap_is_413(lite0_model: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", max_upload_bytes=200_000)
    with TestClient(create_app(settings, lite0_model, configure_logs=False)) as client:
        wait_ready(client)
        response = post(client, b"\xff\xd8\xff\xe0" + bytes(300_000))
        assert response.status_code == 413 and "limit" in response.json()["detail"]
        body = (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + b"\xff\xd8\xff\xe0" + bytes(400_000) + b"\r\n--x--\r\n"
        )
        chunked = client.post(  # no Content-Length: the cap is enforced while the body streams in
            "/api/predict",
            content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert chunked.status_code == 413 and "limit" in chunked.json()["detail"]
        assert post(client, CAT.read_bytes()).status_code == 200
        text = client.get("/metrics").text
        assert 'catdog_requests_total{method="POST",route="/api/predict",status="413"}' in text


@pytest.mark.parametrize("field", ["image", "files"])
def test_a_missing_or_misnamed_field_is_422_json(app_client: TestClient, field: str) -> None:
    response = post(app_client, CAT.read_bytes(), field=field)
    assert response.status_code == 422 and "file" in response.json()["detail"]


def test_not_multipart_at_all_is_4xx_json(app_client: TestClient) -> None:
    response = app_client.post("/api/predict", content=CAT.read_bytes(), headers={"content-type": "image/jpeg"})
    assert 400 <= response.status_code < 500 and "detail" in response.json()


def test_the_bytes_decide_not_the_declared_type_or_name(app_client: TestClient) -> None:
    assert post(app_client, CAT.read_bytes(), "cat.txt", ctype="").status_code == 200
    assert post(app_client, CAT.read_bytes(), "blob", ctype="application/octet-stream").status_code == 200
    png = encode(Image.open(CAT).convert("RGBA"), "PNG")
    assert post(app_client, png, "photo.jpg", ctype="image/jpeg").status_code == 200


def test_file_names_never_become_paths(app_client: TestClient, tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = {p.name for p in state.rglob("*")}
    body = post(app_client, DOG.read_bytes(), "../../../../tmp/evil.jpg").json()
    assert "evil" in body["filename"]
    assert not Path("/tmp/evil.jpg").exists()
    created = {p.name for p in state.rglob("*")} - before
    assert all("evil" not in name for name in created)


def test_an_unexpected_error_is_a_json_500_not_plain_text(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = app_state(app_client.app).service  # type: ignore[arg-type]

    async def broken(*args: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "predict", broken)
    client = TestClient(app_client.app, raise_server_exceptions=False)  # the same running app
    response = post(client, CAT.read_bytes())
    assert response.status_code == 500 and response.json()["detail"]
    assert service.in_flight == 0  # the admitted image was released


# --- overload: 503 with Retry-After at once, full service when the load drops --------------------------------
def test_past_the_queue_bound_the_answer_is_503_with_retry_after(lite0_model: Path, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "state", max_batch_size=1, max_queue_size=2, max_batch_files=2, prediction_cache_size=0
    )
    with TestClient(create_app(settings, lite0_model, configure_logs=False)) as client:
        wait_ready(client)
        service = app_state(client.app).service  # type: ignore[arg-type]
        hold = threading.Event()
        original = service.batcher.run_batch

        def held(jobs):  # type: ignore[no-untyped-def]
            hold.wait(30)
            return original(jobs)

        service.batcher.run_batch = held
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda: answers.append(post(client, CAT.read_bytes()).status_code))
            for _ in range(2)
        ]
        [t.start() for t in threads]
        deadline = time.time() + 10
        while service.in_flight < 2 and time.time() < deadline:
            time.sleep(0.01)
        started = time.perf_counter()
        refused = post(client, DOG.read_bytes())
        elapsed = time.perf_counter() - started
        hold.set()
        [t.join() for t in threads]
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "detail" in refused.json()
        assert elapsed < 0.5  # at once, not after a timeout
        assert float(refused.headers["server-timing"].split("dur=")[1]) < 50  # ms on the server, body not parsed
        assert answers == [200, 200]
        assert post(client, DOG.read_bytes()).status_code == 200  # full service again


# --- status, metrics, data set, retraining ------------------------------------------------------------------------
def test_status_fields_and_counters_from_the_database(app_client: TestClient) -> None:
    for path in (CAT, DOG, CAT):
        assert post(app_client, path.read_bytes()).status_code == 200
    deadline = time.time() + 5
    while True:
        body = app_client.get("/api/status").json()
        if body["total_predictions"] == 3 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert body["total_predictions"] == 3
    assert body["status"] == "healthy" and body["model_loaded"] is True
    assert body["uptime"].endswith("s") and body["uptime_seconds"] >= 0
    assert body["total_retrains"] == 0 and body["is_retraining"] is False
    assert body["precision"] in {"fp32", "int8"} and body["backbone"] == "efficientnet_lite0"
    assert body["model_version"].startswith("efficientnet_lite0")
    # which replica answered: behind a load balancer each container has its own hostname
    assert body["instance"] == f"{socket.gethostname()}:{os.getpid()}"


def test_health_and_ready(app_client: TestClient) -> None:
    health = app_client.get("/health").json()
    assert health["status"] == "ok" and health["timestamp"]
    assert health["instance"] == f"{socket.gethostname()}:{os.getpid()}"
    assert app_client.get("/ready").status_code == 200


def test_ready_is_503_with_the_reason_when_the_model_cannot_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    with TestClient(create_app(make_settings(tmp_path / "state"), broken, configure_logs=False)) as client:
        deadline = time.time() + 10
        while client.get("/ready").json()["phase"] != "failed" and time.time() < deadline:
            time.sleep(0.05)
        response = client.get("/ready")
        assert response.status_code == 503 and "model_config.json" in response.json()["error"]
        assert client.get("/health").status_code == 200
        refused = post(client, CAT.read_bytes())
        assert refused.status_code == 503 and "detail" in refused.json()


def test_model_metrics_use_the_spec_names(lite0_model: Path, tmp_path: Path) -> None:
    import shutil

    model = Path(shutil.copytree(lite0_model, tmp_path / "model"))
    (model / "metrics.json").write_text(
        json.dumps(
            {
                "accuracy": 0.9,
                "precision": 0.8,
                "recall": 0.7,
                "f1": 0.75,
                "roc_auc": 0.95,
                "log_loss": 0.3,
                "n": 12,
                "confusion_matrix": [[5, 1], [1, 5]],
            }
        )
    )
    (model / "plots").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(model / "plots" / "roc_curve.png")
    with TestClient(create_app(make_settings(tmp_path / "state"), model, configure_logs=False)) as client:
        body = client.get("/api/metrics").json()
        assert body["f1_score"] == 0.75 and "f1" not in body
        for name in ("accuracy", "precision", "recall", "f1_score", "roc_auc"):
            assert 0 <= body[name] <= 1
        assert body["confusion_matrix"] == [[5, 1], [1, 5]] and body["timestamp"]
        assert body["plots"] == {"roc_curve": "/api/metrics/plots/roc_curve.png"}
        assert client.get(body["plots"]["roc_curve"]).headers["content-type"] == "image/png"
        assert client.get("/api/metrics/plots/..%2Fmetrics.json").status_code == 404


def test_model_metrics_without_an_evaluation_is_a_json_404(app_client: TestClient) -> None:
    response = app_client.get("/api/metrics")
    assert response.status_code == 404 and "catdog evaluate" in response.json()["detail"]


def test_dataset_stats_count_each_split_as_integers(app_client: TestClient) -> None:
    body = app_client.get("/api/dataset-stats").json()
    assert body["training"] == {"cats": 16, "dogs": 16, "total": 32}
    assert body["testing"] == {"cats": 6, "dogs": 6, "total": 12}
    assert body["retraining"] == {"cats": 0, "dogs": 0, "total": 0}


def test_retrain_status_answers_the_spec_fields(app_client: TestClient) -> None:
    body = app_client.get("/api/retrain-status").json()
    assert body["is_retraining"] is False and body["total_retrains"] == 0 and body["last_retrain"] is None


# --- monitoring ------------------------------------------------------------------------------------------------------
def test_prometheus_exposition_counts_requests_predictions_batches(app_client: TestClient) -> None:
    post(app_client, CAT.read_bytes())
    post(app_client, CAT.read_bytes())
    text = app_client.get("/metrics").text
    for name in (
        "catdog_requests_total",
        "catdog_request_duration_seconds_bucket",
        "catdog_predictions_total",
        "catdog_batch_size_bucket",
        "catdog_queue_depth",
        "catdog_prediction_cache_total",
        "catdog_rejections_total",
    ):
        assert name in text, name
    assert 'route="/api/predict"' in text and 'cached="true"' in text


def test_the_monitoring_summary_reflects_predictions(app_client: TestClient) -> None:
    for path in (CAT, DOG, DOG):
        post(app_client, path.read_bytes())
    deadline = time.time() + 5
    while app_client.get("/api/status").json()["total_predictions"] < 3 and time.time() < deadline:
        time.sleep(0.05)
    body = app_client.get("/api/monitoring").json()
    assert body["system"]["cpu_count"] >= 1 and body["system"]["memory_total_bytes"] > 0
    assert "drift" in body


def test_docs_are_served_without_any_cdn(app_client: TestClient) -> None:
    page = app_client.get("/docs").text.lower()
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
    for host in ("cdn.jsdelivr", "unpkg.com", "fonts.googleapis", "fastapi.tiangolo.com"):
        assert host not in page
    assert app_client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert "/api/predict" in app_client.get("/openapi.json").json()["paths"]


def test_a_client_request_id_is_echoed_and_a_bad_one_replaced(app_client: TestClient) -> None:
    assert app_client.get("/health", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = app_client.get("/health", headers={"x-request-id": "bad id with spaces"}).headers["x-request-id"]
    assert replaced != "bad id" and len(replaced) == 32


def test_unknown_paths_are_json_404(app_client: TestClient) -> None:
    response = app_client.get("/api/nope")
    assert response.status_code == 404 and response.json()["detail"]
    assert app_client.delete("/api/predict").status_code == 405


def test_a_drift_check_compares_recent_predictions_with_the_reference(lite0_model: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", drift_min_samples=10)
    with TestClient(create_app(settings, lite0_model, configure_logs=False)) as client:
        wait_ready(client)
        early = client.get("/api/monitoring").json()
        assert early["drift"] is None and early["drift_reason"]
        photos = sorted((CATSDOGS / "test" / "cats").iterdir()) + sorted((CATSDOGS / "test" / "dogs").iterdir())
        for photo in photos:
            assert post(client, photo.read_bytes()).status_code == 200
        report = client.get("/api/drift", params={"refresh": "true"}).json()  # computed in the child process
        assert report["window_size"] == len(photos)
        assert isinstance(report["prediction"]["drift"], bool) and 0 <= report["values"]["ks_p_value"] <= 1
        assert "K-S p-value" in report["prediction"]["summary"]
        assert report["feature"]["drift"] is not None or report["feature"]["reason"]
        assert client.get("/api/monitoring").json()["drift"]["window_size"] == len(photos)
    from catdog.db import queries
    from catdog.db.session import make_engine, session_factory

    with session_factory(make_engine(settings.sqlalchemy_url))() as session:
        stored = queries.latest_drift_report(session)
    assert stored is not None and stored["window_size"] == len(photos)


class _LeavingClient:
    """Stands in for a Request whose client disconnects after `after` seconds."""

    def __init__(self, after: float) -> None:
        self.after = after

    async def receive(self) -> dict[str, str]:
        await asyncio.sleep(self.after)
        return {"type": "http.disconnect"}


def test_work_of_a_client_that_leaves_is_cancelled() -> None:
    from fastapi import HTTPException

    from catdog.web.routes.predict import unless_client_leaves

    cancelled = []

    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "done"

    async def fast() -> str:
        return "done"

    async def main() -> None:
        with pytest.raises(HTTPException) as info:
            await unless_client_leaves(_LeavingClient(0.05), slow())  # type: ignore[arg-type]
        assert info.value.status_code == 499 and cancelled == [True]
        assert await unless_client_leaves(_LeavingClient(5), fast()) == "done"  # type: ignore[arg-type]

    asyncio.run(main())
