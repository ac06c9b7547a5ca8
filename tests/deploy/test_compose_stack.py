"""The compose stack as users run it, built and driven for real: nginx in front of 3 ml-app replicas,
the job worker on the Redis queue, PostgreSQL, the MLflow server with artifacts on S3.

`deploy/docker/compose-up.sh` brings up a stack of its own (project `catdog-test-<pid>`, a free port
on 127.0.0.1, the committed fixture photos as the data set) and `compose-down.sh` removes it with
its networks and volumes; the dockerd that `engine.sh` started for the test is stopped again.
Skipped, with the reason, only where no container engine can run. The tests run in file order
and share the stack: load, counters, promotion, a killed and a crashed replica, a retrain, a restart.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "catsdogs"
REPLICAS = 3
UP_TIMEOUT_S = 1200  # images built from nothing on 2 cores, then 3 VGG16 replicas warming up
PROMOTION_LIMIT_S = 10.0

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


@dataclass
class Stack:
    project: str
    url: str
    token: str
    env: dict[str, str]
    files: list[str] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)

    # --- compose and docker ---------------------------------------------------------------------
    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", *self.files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def replica_ids(self) -> list[str]:
        return self.compose("ps", "-q", "ml-app").stdout.split()

    def sql(self, query: str) -> str:
        return self.compose(
            "exec", "-T", "postgres", "psql", "-U", "catdog", "-d", "catdog", "-tAc", query
        ).stdout.strip()

    def replica_metrics(self, index: int) -> str:
        """GET /metrics of one replica, asked inside its container (nothing published)."""
        script = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics').read().decode())"
        return self.compose("exec", "-T", "--index", str(index), "ml-app", "python", "-c", script).stdout

    # --- HTTP through nginx -----------------------------------------------------------------------
    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout=120
    ) -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)
        except OSError as exc:
            return 0, str(exc).encode(), {}

    def json(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        status, raw, _ = self.call(method, path, body, headers)
        assert status < 400, f"{method} {path} -> {status}: {raw[:300]!r}"
        return json.loads(raw)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def statuses(self, n: int) -> list[dict]:
        found = []
        for _ in range(n):
            status, raw, _ = self.call("GET", "/api/status", timeout=30)
            if status == 200:
                found.append(json.loads(raw))
        return found

    def wait_replicas_serving(self, version: int | None, limit_s: float, replicas: int = REPLICAS) -> float:
        """Seconds until `replicas` distinct instances answer, each with registry_version == version (if given)."""
        started = time.monotonic()
        latest: dict[str, object] = {}
        while time.monotonic() - started < limit_s:
            for status in self.statuses(4 * replicas):
                latest[status["instance"]] = status.get("registry_version")
            live = {k: v for k, v in latest.items() if v is not None or version is None}
            if len(live) >= replicas and (version is None or sum(v == version for v in live.values()) >= replicas):
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"after {limit_s:.0f} s the replicas serve {latest} (want {replicas} at v{version})")


def _multipart(field_name: str, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


PHOTOS = sorted((FIXTURES / "test").glob("*/*.jpg")) + sorted((FIXTURES / "train").glob("*/*.jpg"))


class Load:
    """`clients` threads sending predictions of fixture photos (made distinct, so no answer is cached)."""

    def __init__(self, stack: Stack, clients: int = 6) -> None:
        self.stack = stack
        self.clients = clients
        self.codes: Counter[int] = Counter()
        self.errors: list[str] = []
        self.instances: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self._photos = [path.read_bytes() for path in PHOTOS]

    def _client(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._counter += 1
                i = self._counter
            data = self._photos[i % len(self._photos)] + i.to_bytes(8, "big")  # bytes after the JPEG's end
            body, content_type = _multipart("file", [(f"{i}.jpg", data)])
            status, raw, _ = self.stack.call("POST", "/api/predict", body, {"Content-Type": content_type})
            with self._lock:
                self.codes[status] += 1
                if status != 200:
                    self.errors.append(f"{status}: {raw[:200]!r}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)

    @property
    def total(self) -> int:
        return sum(self.codes.values())

    def assert_no_failures(self, what: str) -> None:
        assert self.total > 0, f"{what}: no prediction was answered"
        failed = self.total - self.codes[200]
        assert failed == 0, f"{what}: {failed} of {self.total} predictions failed: {self.errors[:5]}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    started_engine = False
    if not _engine_answers():
        start = subprocess.run(
            ["bash", "deploy/docker/engine.sh", "start"], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
        if start.returncode != 0 or not _engine_answers():
            pytest.skip(f"no container engine can run here: {(start.stderr or start.stdout).strip()[-300:]}")
        started_engine = True
    project = f"catdog-test-{os.getpid()}"
    port = _free_port()
    token = uuid.uuid4().hex
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": project,
        "REPLICAS": str(REPLICAS),
        "CATDOG_COMPOSE_PORT": str(port),
        "CATDOG_ADMIN_TOKEN": token,
        "CATDOG_DATA_HOST_DIR": str(FIXTURES),
        "CATDOG_RETRAIN_MIN_PER_CLASS": "5",  # the fixtures' test split holds 6 photos per class
        "CATDOG_WARMUP_BATCH_SIZES": "1",  # a swap warms size 1 only too; the batch sizes are tested elsewhere
        "CATDOG_COMPOSE_TIMEOUT": str(UP_TIMEOUT_S),
    }
    stack = Stack(project, f"http://127.0.0.1:{port}", token, env)
    try:
        began = time.monotonic()
        up = subprocess.run(
            ["bash", "deploy/docker/compose-up.sh"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_S + 600,
        )
        assert up.returncode == 0, f"compose-up failed:\n{up.stderr[-4000:]}"
        stack.notes["up_seconds"] = round(time.monotonic() - began, 1)
        saved = ROOT / ".cache" / "compose" / f"{project}.files"
        stack.files = saved.read_text().split()
        yield stack
    finally:
        down = subprocess.run(
            ["bash", "deploy/docker/compose-down.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        label = f"label=com.docker.compose.project={project}"
        left = [
            subprocess.run(["docker", *kind, "-q", "--filter", label], capture_output=True, text=True).stdout.split()
            for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"])
        ]
        if started_engine:
            subprocess.run(["bash", "deploy/docker/engine.sh", "stop"], cwd=ROOT, capture_output=True, timeout=120)
        print(f"\ncompose stack {project}: {json.dumps(stack.notes)}")
        assert down.returncode == 0, f"compose-down failed: {down.stderr[-2000:]}"
        assert not any(left), f"left behind (containers, networks, volumes): {left}"


def test_replicas_answer_under_load_and_counters_agree(stack: Stack) -> None:
    before = stack.statuses(1)[0]["total_predictions"]
    instances: set[str] = set()
    with Load(stack) as load:
        time.sleep(10)
        for _ in range(90):  # least_conn favours the replica with the fewest requests in flight
            instances |= {s["instance"] for s in stack.statuses(1)}
            if len(instances) == REPLICAS:
                break
    load.assert_no_failures("steady load")
    assert len(instances) == REPLICAS, f"instances answering /api/status: {instances}"

    time.sleep(2)  # every replica's writer flushes its records (CATDOG_DB_FLUSH_SECONDS 0.5)
    in_database = int(stack.sql("SELECT count(*) FROM predictions"))
    totals = {s["instance"]: s["total_predictions"] for s in stack.statuses(30)}
    assert set(totals.values()) == {in_database}, f"/api/status per replica {totals}, database {in_database}"
    assert in_database - before == load.total
    served = []  # each replica's own Prometheus counter
    for index in range(1, REPLICAS + 1):
        text = stack.replica_metrics(index)
        found = re.findall(r"^catdog_predictions_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
        served.append(sum(float(v) for v in found))
    assert sum(served) == in_database, f"catdog_predictions_total per replica {served}, database {in_database}"
    assert min(served) >= 0.1 * load.total, f"nginx spread {load.total} predictions as {served}"
    stack.notes["steady"] = {"predictions": load.total, "per_replica": served}


def test_promotion_reaches_every_replica_under_load(stack: Stack) -> None:
    models = stack.json("GET", "/api/models")
    production = models["production"]
    target = next(v["version"] for v in models["versions"] if v["version"] != production)
    with Load(stack) as load:
        time.sleep(2)
        stack.json("POST", f"/api/models/{target}/promote", b"", stack.admin())
        took = stack.wait_replicas_serving(target, limit_s=30)
        time.sleep(2)
    load.assert_no_failures("promotion")
    stack.notes["promotion_seconds"] = round(took, 1)
    assert took <= PROMOTION_LIMIT_S, f"the promotion reached every replica in {took:.1f} s"


def test_a_killed_replica_costs_no_request_and_comes_back(stack: Stack) -> None:
    victim = stack.replica_ids()[0]
    with Load(stack) as load:
        time.sleep(3)
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        time.sleep(6)
    load.assert_no_failures("docker kill of a replica")
    # `docker kill` is a manual stop to Docker (no restart policy applies): compose brings it back
    stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", f"ml-app={REPLICAS}")
    stack.wait_replicas_serving(None, limit_s=300)
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", victim], capture_output=True, text=True)
    assert state.stdout.strip() == "true"
    stack.notes["killed"] = {"predictions": load.total}


KILL_SERVER = """
import os, signal
for pid in os.listdir('/proc'):
    if pid.isdigit() and int(pid) not in (1, os.getpid()):
        if b'catdog\\x00serve' in open(f'/proc/{pid}/cmdline', 'rb').read():
            os.kill(int(pid), signal.SIGKILL)
"""


def test_a_crashed_replica_is_restarted_by_its_policy(stack: Stack) -> None:
    victim = stack.replica_ids()[-1]
    restarts = int(subprocess.check_output(["docker", "inspect", "-f", "{{.RestartCount}}", victim], text=True))
    with Load(stack) as load:
        time.sleep(3)
        # the server process dies (as on a crash or an out-of-memory kill); tini, PID 1, then exits
        subprocess.run(["docker", "exec", victim, "python", "-c", KILL_SERVER], check=True, capture_output=True)
        time.sleep(6)
    load.assert_no_failures("a crashed replica")
    deadline = time.monotonic() + 60
    while int(subprocess.check_output(["docker", "inspect", "-f", "{{.RestartCount}}", victim], text=True)) <= restarts:
        assert time.monotonic() < deadline, "the crashed replica was not restarted"
        time.sleep(1)
    stack.wait_replicas_serving(None, limit_s=300)


def _new_photo(path: Path) -> bytes:
    """A training photo made new: mirrored and cropped (uploads of base-set photos are duplicates)."""
    with Image.open(path) as image:
        flipped = ImageOps.mirror(image.convert("RGB"))
        w, h = flipped.size
        out = io.BytesIO()
        flipped.crop((w // 16, h // 16, w - w // 16, h - h // 16)).save(out, "JPEG", quality=92)
        return out.getvalue()


def test_retrain_through_nginx_reaches_every_replica(stack: Stack) -> None:
    for class_name in ("cats", "dogs"):
        photos = sorted((FIXTURES / "train" / class_name).glob("*.jpg"))[:5]
        body, content_type = _multipart("files", [(p.name, _new_photo(p)) for p in photos])
        answer = stack.json(
            "POST",
            f"/api/upload-training-data?class_name={class_name}",
            body,
            {**stack.admin(), "Content-Type": content_type},
        )
        assert answer["uploaded"] == 5, answer
    job = stack.json("POST", "/api/retrain", b"", stack.admin())
    began = time.monotonic()
    while True:
        status = stack.json("GET", "/api/retrain-status")
        if status.get("job_id") == job["job_id"] and status["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() - began < 600, f"the retrain did not finish: {status}"
        time.sleep(2)
    assert status["status"] == "succeeded", status
    version = int(status["version"])
    stack.notes["retrain"] = {"seconds": round(time.monotonic() - began, 1), "version": version, "gate": status["gate"]}
    if stack.json("GET", "/api/models")["production"] != version:  # the gate kept it as staging
        stack.json("POST", f"/api/models/{version}/promote", b"", stack.admin())
    stack.wait_replicas_serving(version, limit_s=60)
    stack.notes["retrained_version"] = version


def test_a_restarted_stack_keeps_registry_uploads_jobs_and_history(stack: Stack) -> None:
    version = stack.notes["retrained_version"]
    total = stack.statuses(1)[0]["total_predictions"]
    jobs = stack.json("GET", "/api/retrain/jobs")["jobs"]
    uploads = stack.json("GET", "/api/uploads")
    stack.compose("stop", timeout=300)
    stack.compose("up", "-d", "--no-build", "--scale", f"ml-app={REPLICAS}", timeout=600)
    stack.wait_replicas_serving(version, limit_s=600)
    models = stack.json("GET", "/api/models")
    assert models["production"] == version
    assert {v["version"] for v in models["versions"]} >= {1, 2, version}
    assert stack.statuses(1)[0]["total_predictions"] >= total
    assert stack.json("GET", "/api/retrain/jobs")["jobs"][: len(jobs)] == jobs
    assert stack.json("GET", "/api/uploads") == uploads and uploads["total"] == 10
    for upload in uploads["uploads"]:  # the files, not only their rows: the state volume kept them
        assert stack.call("GET", f"/api/uploads/{upload['sha256']}/image")[0] == 200
