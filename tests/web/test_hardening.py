"""The web layer's faults a tester found (issue 20), each pinned by a test: strict integers, security
headers, no server paths in /api/status, an honest OpenAPI, the admin token checked before any body is
read, 500s with their request id, HEAD probes, a second file in /api/predict, the first CPU figure."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from catdog.web import monitor
from catdog.web.app import create_app
from catdog.web.deps import INT64_MAX, AdminDep
from catdog.web.logs import _RequestIdFilter
from catdog.web.middleware import CONTENT_SECURITY_POLICY, route_table
from catdog.web.routes.status import model_source
from catdog.web.state import app_state

from ..conftest import CATSDOGS
from .conftest import make_settings

CAT = CATSDOGS / "test" / "cats" / "cat.4002.jpg"
DOG = CATSDOGS / "test" / "dogs" / "dog.4003.jpg"
NOT_DIGITS = ("1.0", "+2", "2_0", "-1", " 1", "1e3", "0x10", "٣")  # the last: an Arabic-Indic three


def admin(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {app_state(client.app).admin_token}"}  # type: ignore[arg-type]


@pytest.fixture
def bare_app(tmp_path: Path) -> FastAPI:
    """The app without its life cycle (no model, no database): enough for what happens before a route runs."""
    return create_app(make_settings(tmp_path / "state"), tmp_path / "no-model", configure_logs=False)


@pytest.fixture
def bare_client(bare_app: FastAPI) -> TestClient:
    return TestClient(bare_app, raise_server_exceptions=False)


# --- 1. strict integers in paths and queries -----------------------------------------------------------------
def test_versions_take_plain_digits_only_and_past_int64_are_404(bare_client: TestClient) -> None:
    token = admin(bare_client)
    for text in NOT_DIGITS:
        plot = bare_client.get(f"/api/models/{text}/plots/roc_curve.png")
        promote = bare_client.post(f"/api/models/{text}/promote", headers=token)
        assert plot.status_code == promote.status_code == 422, (text, plot.text, promote.text)
        assert "digits" in plot.json()["detail"]
    for huge in ("9223372036854775808", "99999999999999999999", "9" * 400):
        assert bare_client.get(f"/api/models/{huge}/plots/roc_curve.png").status_code == 404
        answer = bare_client.post(f"/api/models/{huge}/promote", headers=token)
        assert answer.status_code == 404 and "no model version" in answer.json()["detail"]
    # the largest number the registry can hold is looked up, and is not there: 404 from the registry
    assert bare_client.get(f"/api/models/{INT64_MAX}/plots/roc_curve.png").status_code == 404


def test_query_integers_are_strict_and_bounded(app_client: TestClient) -> None:
    assert app_client.get("/api/uploads", params={"offset": INT64_MAX + 1}).status_code == 422
    at_the_edge = app_client.get("/api/uploads", params={"offset": INT64_MAX})
    assert at_the_edge.status_code == 200 and at_the_edge.json()["uploads"] == []
    for text in NOT_DIGITS:
        for path, name in (("/api/uploads", "offset"), ("/api/uploads", "limit"), ("/api/retrain/jobs", "limit")):
            answer = app_client.get(path, params={name: text})
            assert answer.status_code == 422, (path, name, text, answer.text)
        assert app_client.get("/api/monitoring", params={"minutes": text}).status_code == 422
    assert app_client.get("/api/uploads", params={"limit": "2", "offset": "0"}).status_code == 200


def test_every_integer_in_a_path_or_query_is_strict(app_client: TestClient) -> None:
    """No route takes a lax int: each integer parameter in /openapi.json is bounded, and strict in fact."""
    client = app_client
    schema = client.get("/openapi.json").json()
    found = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["schema"].get("type") != "integer":
                    continue
                found += 1
                assert "maximum" in parameter["schema"] or parameter["in"] == "path", (path, parameter)
                url = path.replace("{" + parameter["name"] + "}", "+2") if parameter["in"] == "path" else path
                query = {parameter["name"]: "+2"} if parameter["in"] == "query" else {}
                url = url.replace("{name}", "x.png").replace("{version}", "1")
                answer = client.request(method, url, params=query, headers=admin(client))
                assert answer.status_code == 422, (method, path, parameter["name"], answer.status_code)
    assert found >= 5


# --- 2. security headers on every answer ------------------------------------------------------------------
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def assert_secure(response: Any) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (response.request.url, name, dict(response.headers))
    policy = response.headers["content-security-policy"]
    directives = dict([*part.strip().split(" ", 1), ""][:2] for part in policy.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]


def test_every_kind_of_answer_carries_the_security_headers(bare_app: FastAPI) -> None:
    @bare_app.get("/test-boom")
    def boom() -> None:
        raise RuntimeError("boom")

    client = TestClient(bare_app, raise_server_exceptions=False)
    answers = {
        "page": client.get("/models-page"),
        "docs": client.get("/docs"),
        "openapi": client.get("/openapi.json"),
        "health": client.get("/health"),
        "static": client.get("/static/css/app.css"),
        "vendor": client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js"),
        "404": client.get("/api/no-such-thing"),
        "401": client.post("/api/retrain"),
        "413": client.post("/api/predict", content=b"x", headers={"Content-Length": str(1 << 30)}),
        "422": client.get("/api/models/x/plots/a.png"),
        "500": client.get("/test-boom"),
    }
    for kind, response in answers.items():
        assert response.status_code == int(kind) if kind.isdigit() else response.status_code == 200, kind
        assert_secure(response)


def test_the_pages_and_docs_have_no_inline_script_style_or_handler(bare_client: TestClient) -> None:
    from html.parser import HTMLParser

    class Inline(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.problems: list[str] = []
            self._in: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self._in = tag
            for name, _ in attrs:
                if name == "style" or name.startswith("on"):
                    self.problems.append(f"<{tag} {name}=...>")
            if tag == "script" and not dict(attrs).get("src"):
                self.problems.append("<script> without src")
            if tag == "style":
                self.problems.append("<style>")

        def handle_endtag(self, tag: str) -> None:
            self._in = None

    for path in ("/", "/predict-page", "/retrain-page", "/models-page", "/monitoring", "/docs"):
        parser = Inline()
        parser.feed(bare_client.get(path).text)
        assert not parser.problems, (path, parser.problems)
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY


# --- 3. /api/status names the model, never a server path ---------------------------------------------------
def test_status_shows_no_server_path(app_client: TestClient, lite0_model: Path) -> None:
    status = app_client.get("/api/status").json()
    assert status["model_dir"] == f"pinned:{lite0_model.name}"
    text = json.dumps(status)
    assert str(lite0_model) not in text and str(lite0_model.parent) not in text
    assert status["model_version"] and status["backbone"] == "efficientnet_lite0" and status["precision"]


def test_model_metrics_name_the_test_folder_without_its_path() -> None:
    from catdog.web.routes.status import _without_root

    assert _without_root({"root": "/srv/secret/catsdogs/test", "n": 3}) == {"root": "test", "n": 3}
    assert _without_root(None) is None


def test_dataset_stats_name_the_data_set_without_its_path(app_client: TestClient) -> None:
    stats = app_client.get("/api/dataset-stats").json()
    assert stats["data_dir"] == "catsdogs"  # the fixtures' data set (tests/web/conftest.py make_settings)
    assert "/" not in stats["data_dir"] and str(Path(__file__).parents[1]) not in json.dumps(stats)


def test_a_registry_model_is_named_by_its_model_uri(tmp_path: Path) -> None:
    served = {"production": {"version": 3, "model_version": "abc"}, "staging": None}
    service = SimpleNamespace(predictor=object(), served=lambda: served, model_dir=tmp_path / "secret" / "path")
    settings = make_settings(tmp_path)
    assert model_source(service, settings) == f"models:/{settings.registered_model}/3"  # type: ignore[arg-type]
    served["production"] = {"version": None, "model_version": "abc"}
    assert model_source(service, settings) == "pinned:path"  # type: ignore[arg-type]
    service.predictor = None
    assert model_source(service, settings) is None  # type: ignore[arg-type]


# --- 4. /openapi.json: the admin token's scheme, the real status codes ---------------------------------------
def test_openapi_marks_admin_routes_and_documents_real_status_codes(bare_app: FastAPI) -> None:
    schema = TestClient(bare_app).get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["AdminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["AdminToken"]["description"],
    }
    error = "#/components/schemas/ErrorDetail"
    assert schema["components"]["schemas"]["ErrorDetail"]["properties"]["detail"]["type"] == "string"
    admin_paths = set()
    for target in route_table(bare_app.routes):
        if not getattr(target.route, "include_in_schema", False):
            continue
        for method in (target.methods or set()) - {"HEAD"}:
            operation = schema["paths"][target.path][method.lower()]
            for code, answer in operation["responses"].items():
                if code.startswith(("4", "5")) and code != "422":
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref == error, (target.path, code)
            if target.admin:
                admin_paths.add(target.path)
                assert operation["security"] == [{"AdminToken": []}], target.path
                assert {"401", "403"} <= set(operation["responses"]), target.path
            else:
                assert "security" not in operation, target.path
    assert {"/api/retrain", "/api/upload-training-data", "/api/models/{version}/promote"} <= admin_paths
    codes = {
        (path, method): set(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert "202" in codes["/api/retrain", "post"] and "200" not in codes["/api/retrain", "post"]
    assert {"409", "413", "503"} <= codes["/api/retrain", "post"]
    assert {"413", "415", "503", "422"} <= codes["/api/predict", "post"]
    assert {"413", "503"} <= codes["/api/predict/batch", "post"]
    assert {"429", "409", "404"} <= codes["/api/feedback", "post"]
    assert "503" in codes["/ready", "get"]
    assert "409" in codes["/api/uploads/{sha256}", "delete"]
    retry = schema["paths"]["/api/predict"]["post"]["responses"]["503"]["headers"]
    assert "Retry-After" in retry
    validation = schema["components"]["schemas"]["HTTPValidationError"]
    assert validation["properties"]["detail"]["type"] == "string" and "errors" in validation["properties"]


# --- 5. the admin token before the body ------------------------------------------------------------------
def test_admin_routes_are_derived_from_their_dependency(bare_app: FastAPI) -> None:
    @bare_app.post("/test-admin-only", dependencies=[AdminDep])
    def admin_only() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(bare_app)
    broken = client.post("/test-admin-only", content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 401
    assert client.post("/test-admin-only", headers=admin(client)).json() == {"ok": True}
    admin_paths = {target.path for target in route_table(bare_app.routes) if target.admin}
    assert "/api/predict" not in admin_paths and "/api/feedback" not in admin_paths
    assert {"/api/retrain", "/api/auth/check", "/api/uploads/{sha256}", "/test-admin-only"} <= admin_paths
    documented = client.get("/openapi.json").json()["paths"]["/test-admin-only"]["post"]  # no responses= given
    assert documented["security"] == [{"AdminToken": []}] and {"401", "403"} <= set(documented["responses"])
    assert documented["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorDetail")


def test_no_token_is_refused_before_a_byte_of_the_body_is_read(bare_app: FastAPI) -> None:
    """At the ASGI level: the 401 (and the 403) is sent without one call to receive()."""

    async def call(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            raise AssertionError("the body was read")

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"test"), (b"content-length", str(140 << 20).encode()), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await bare_app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], dict(start["headers"]), body

    multipart = [(b"content-type", b"multipart/form-data; boundary=x")]
    for path in ("/api/upload-training-data?class_name=cats", "/api/retrain", "/api/models/1/promote"):
        status, headers, body = asyncio.run(call(path, multipart))
        assert status == 401 and headers[b"www-authenticate"] == b"Bearer", (path, status)
        assert "admin token" in json.loads(body)["detail"]
        assert headers[b"x-frame-options"] == b"DENY" and b"x-request-id" in headers
        status, _, body = asyncio.run(call(path, [*multipart, (b"authorization", b"Bearer wrong")]))
        assert status == 403 and json.loads(body)["detail"] == "the admin token is wrong"


def test_malformed_or_huge_admin_bodies_without_a_token_get_401_not_422_or_400(bare_client: TestClient) -> None:
    broken = bare_client.post("/api/retrain", content=b'{"backbone": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 401
    files = [("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(10_000)]
    many = bare_client.post("/api/upload-training-data", params={"class_name": "cats"}, files=files)
    assert many.status_code == 401
    wrong = bare_client.post("/api/retrain", content=b"{", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    # with the token, the body is parsed as before: malformed JSON is the client's 422
    right = bare_client.post(
        "/api/retrain", content=b'{"backbone": ', headers={**admin(bare_client), "Content-Type": "application/json"}
    )
    assert right.status_code == 422


@pytest.fixture
def live_server(bare_app: FastAPI) -> Iterator[tuple[str, int]]:
    """The bare app behind a real uvicorn on a free 127.0.0.1 port (no life cycle), stopped afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(bare_app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_over_a_socket_the_401_comes_before_the_rest_of_a_140_mb_upload(live_server: tuple[str, int]) -> None:
    """Only the headers and 64 KiB of a declared 140 MB body are sent: the answer must come anyway."""
    boundary = uuid.uuid4().hex
    head = (
        f"POST /api/upload-training-data?class_name=cats HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {140 << 20}\r\n\r\n"
    ).encode()
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'.encode()
    with socket.create_connection(live_server, timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head + part + b"\0" * (64 << 10))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # times out (the test fails) if the server waits for the body
            if not chunk:
                break
            answer += chunk
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"admin token" in answer and took < 5


# --- 6. a 500 carries its request id and timing, and so does its log record ----------------------------------
def test_an_unhandled_error_is_a_500_with_request_id_timing_and_a_logged_request_id(
    bare_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    @bare_app.get("/test-boom")
    def boom() -> None:
        raise RuntimeError("boom in a route")

    caplog.handler.addFilter(_RequestIdFilter())  # what configure_logging puts on the real handler
    client = TestClient(bare_app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR):
        answer = client.get("/test-boom", headers={"X-Request-ID": "boom-test-1"})
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error; the server log has the details"}
    assert answer.headers["x-request-id"] == "boom-test-1"
    assert answer.headers["server-timing"].startswith("app;dur=")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "boom in a route" in (r.exc_text or "")]
    assert errors and all(getattr(r, "request_id", None) == "boom-test-1" for r in errors), errors
    generated = client.get("/test-boom")
    assert len(generated.headers["x-request-id"]) == 32  # made up when the client sends none


# --- 7. HEAD probes -----------------------------------------------------------------------------------------
def test_head_health_and_ready_answer_like_get_without_a_body(app_client: TestClient) -> None:
    for path in ("/health", "/ready"):
        get, head = app_client.get(path), app_client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == "application/json"
    assert app_client.head("/api/status").status_code == 405  # only the probes gained HEAD


# --- 8. a second file in /api/predict ---------------------------------------------------------------------
def test_two_files_in_predict_are_a_422_that_points_at_the_batch_route(app_client: TestClient) -> None:
    files = [("file", ("a.jpg", CAT.read_bytes(), "image/jpeg")), ("file", ("b.jpg", DOG.read_bytes(), "image/jpeg"))]
    answer = app_client.post("/api/predict", files=files)
    assert answer.status_code == 422, answer.text
    assert "/api/predict/batch" in answer.json()["detail"] and "2 files" in answer.json()["detail"]
    one = app_client.post("/api/predict", files=[files[0]])
    assert one.status_code == 200 and one.json()["predicted_class"] in ("cat", "dog")


# --- 9. the first CPU figure is real --------------------------------------------------------------------------
def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def test_the_first_cpu_figure_after_a_start_is_measured_not_zero() -> None:
    """psutil.cpu_percent(None) said 0.0 to each new thread (the server's pool): one reading per process now."""
    usage = monitor.CpuUsage(min_interval=0.2)
    _burn(0.6)  # one core busy, whatever else the machine does
    figures: list[float] = []
    reader = threading.Thread(target=lambda: figures.append(usage.percent()))  # a thread that never asked before
    reader.start()
    reader.join()
    import psutil

    floor = 100 / (psutil.cpu_count() or 1) / 2  # half a core, in percent of all cores
    assert figures[0] >= floor, figures
    assert 0 <= usage.percent() <= 100


def test_system_health_reports_cpu_from_any_thread_right_after_priming() -> None:
    monitor.CPU.prime()
    _burn(0.4)
    figures: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: figures.append(monitor.system_health(time.time())))
    reader.start()
    reader.join()
    assert figures[0]["cpu_percent"] > 0
