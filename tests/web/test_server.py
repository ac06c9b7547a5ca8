"""`catdog serve` as users run it: several worker processes, shared counters, a clean shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ..conftest import CATSDOGS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def call_until_ready(url: str, body: bytes, headers: dict[str, str], timeout: float = 120) -> tuple[int, bytes]:
    """POST, retrying 503s as a client honouring Retry-After does: /ready spoke for one worker only."""
    deadline = time.time() + timeout
    while True:
        status, answer = call(url, body, headers)
        if status != 503 or time.time() > deadline:
            return status, answer
        time.sleep(0.5)


def multipart(data: bytes, name: str) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    def __init__(self, model: Path, state: Path, workers: int, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.state = state
        env = {
            **os.environ,
            "CATDOG_STATE_DIR": str(state),
            "CATDOG_DATA_DIR": str(CATSDOGS),
            "CATDOG_WARMUP_BATCH_SIZES": "1",
            "CATDOG_MAX_BATCH_SIZE": "4",
            "CATDOG_DB_FLUSH_SECONDS": "0.2",
            "CATDOG_THREADS": "1",
            **(env or {}),
        }
        command = [sys.executable, "-m", "catdog.cli", "serve", "--model", str(model), "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--workers", str(workers)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stdout.read().decode() if self.process.stdout else "exited")
            try:
                if call(self.base + "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server never ready")

    def stop(self) -> str:
        """SIGINT (what Ctrl-C sends), then wait; the server's output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""


@pytest.fixture
def two_workers(lite0_model: Path, tmp_path: Path) -> Iterator[Server]:
    server = Server(lite0_model, tmp_path / "state", workers=2)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def prometheus_total(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_report_the_same_counters_and_merged_metrics(two_workers: Server) -> None:
    photos = sorted((CATSDOGS / "test" / "cats").iterdir()) + sorted((CATSDOGS / "test" / "dogs").iterdir())
    for photo in photos:
        body, headers = multipart(photo.read_bytes(), photo.name)
        status, _ = call_until_ready(two_workers.base + "/api/predict", body, headers)
        assert status == 200
    pids = {name.rsplit("_", 1)[-1] for name in os.listdir(two_workers.state / "prometheus")}
    assert len(pids) >= 2  # both workers write samples that /metrics merges
    deadline = time.time() + 10
    while time.time() < deadline:
        counts = {json.loads(call(two_workers.base + "/api/status")[1])["total_predictions"] for _ in range(6)}
        if counts == {len(photos)}:
            break
        time.sleep(0.2)
    assert counts == {len(photos)}  # the same figure from every worker: it comes from the database
    text = call(two_workers.base + "/metrics")[1].decode()
    assert prometheus_total(text, "catdog_predictions_total") == len(photos)
    assert prometheus_total(text, "catdog_requests_total", route="/api/predict", status="200") == len(photos)


def test_a_clean_shutdown_loses_no_prediction_record(lite0_model: Path, tmp_path: Path) -> None:
    server = Server(lite0_model, tmp_path / "state", workers=1)
    try:
        server.wait_ready()
        photo = next((CATSDOGS / "test" / "dogs").iterdir()).read_bytes()
        for i in range(25):  # distinct bytes: no cache hits
            body, headers = multipart(photo + i.to_bytes(4, "big"), f"{i}.jpg")
            assert call(server.base + "/api/predict", body, headers)[0] == 200
        text = call(server.base + "/metrics")[1].decode()  # one worker: serve runs uvicorn in its own process
        assert "# TYPE catdog_predictions_total counter" in text
        assert prometheus_total(text, "catdog_predictions_total") == 25
    finally:
        output = server.stop()
    assert server.process.returncode == 0, output
    with sqlite3.connect(tmp_path / "state" / "catdog.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 25
    assert re.search(r"serving .* on http://localhost:\d+", output)


def test_sigterm_stops_the_server_and_every_process_it_started(lite0_model: Path, tmp_path: Path) -> None:
    """What `docker stop` sends: the server shuts down cleanly, its records are written, and within 15 s
    of the signal no process it started runs (the job worker, the drift check, the resource tracker)."""
    metrics = tmp_path / "metrics"
    server = Server(lite0_model, tmp_path / "state", workers=1, env={"CATDOG_METRICS_DIR": str(metrics)})
    try:
        server.wait_ready()
        photo = next((CATSDOGS / "test" / "cats").iterdir())
        body, headers = multipart(photo.read_bytes(), photo.name)
        assert call(server.base + "/api/predict", body, headers)[0] == 200
        children = started_processes(server, uvicorn_workers=1)
        assert any(metrics.iterdir()) and not (tmp_path / "state" / "prometheus").exists()
        server.process.send_signal(signal.SIGTERM)
        alive = left_running(server, children, seconds=15)
    finally:
        output = server.stop()
    assert server.process.returncode == 0, output
    assert not alive, f"still running 15 s after SIGTERM: {alive}"
    with sqlite3.connect(tmp_path / "state" / "catdog.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1


def started_processes(server: Server, uvicorn_workers: int, timeout: float = 60) -> list[psutil.Process]:
    """Every process `catdog serve` started, once all are up: the job worker, the drift check process of
    each uvicorn worker, uvicorn's worker processes (with several), multiprocessing's resource tracker."""
    spawned = 1 if uvicorn_workers == 1 else 2 * uvicorn_workers  # drift processes (+ uvicorn's workers)
    deadline = time.time() + timeout
    while True:
        processes = psutil.Process(server.process.pid).children(recursive=True)
        lines = [" ".join(process.cmdline()) for process in processes]
        workers = sum("--with-parent" in line for line in lines)
        if workers == 1 and sum("spawn_main" in line for line in lines) >= spawned:
            return processes
        if time.time() > deadline:
            raise TimeoutError(f"serve's processes never all started: {lines}")
        time.sleep(0.2)


def left_running(server: Server, children: list[psutil.Process], seconds: float) -> list[str]:
    """The command lines of the server and the children still running `seconds` after now (zombies count as ended)."""
    deadline = time.monotonic() + seconds
    try:
        server.process.wait(seconds)
    except subprocess.TimeoutExpired:
        return [f"catdog serve (pid {server.process.pid})"]
    _, alive = psutil.wait_procs(children, timeout=max(0.0, deadline - time.monotonic()))
    running = []
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(" ".join(process.cmdline()))
    return running


def test_kill_9_of_serve_leaves_no_process_behind(lite0_model: Path, tmp_path: Path) -> None:
    """`kill -9` runs no code in the server: each child notices that its parent is gone and stops itself
    (catdog.lifecycle): the job worker, uvicorn's worker processes, their drift check processes."""
    server = Server(lite0_model, tmp_path / "state", workers=2)
    children: list[psutil.Process] = []
    try:
        server.wait_ready()
        children = started_processes(server, uvicorn_workers=2)
        server.process.kill()
        alive = left_running(server, children, seconds=15)
        assert not alive, f"still running 15 s after SIGKILL: {alive}"
    finally:
        server.stop()
        for process in children:  # never leave one behind for later tests
            if process.is_running():
                process.kill()


def test_serve_refuses_a_model_folder_that_is_not_built(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "catdog.cli", "serve", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("CATDOG_DATABASE_URL", "notaurl", "database URL"),
        ("CATDOG_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none", "cannot open the database"),
        ("CATDOG_STATE_DIR", "FILE", "CATDOG_STATE_DIR"),
        ("CATDOG_PORT", "TAKEN", "cannot listen"),
    ],
)
def test_serve_refuses_what_would_fail_inside_uvicorn_with_one_line(
    lite0_model: Path, tmp_path: Path, variable: str, value: str, needle: str
) -> None:
    """Before the model loads: a taken port, a bad database or state folder is one line and exit 2."""
    env = {**os.environ, "CATDOG_STATE_DIR": str(tmp_path / "state"), variable: value}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if value == "TAKEN":
            env[variable] = str(taken.getsockname()[1])
        if value == "FILE":
            (tmp_path / "a-file").write_text("")
            env[variable] = str(tmp_path / "a-file")
        command = [sys.executable, "-m", "catdog.cli", "serve", "--model", str(lite0_model)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr
