"""locustfile.py and bench/loadtest_report.py: the outcome classes, the knee, the photo pool, and a real run.

The real run starts `catdog serve` with the tiny Lite0 model and runs Locust headless against it
twice (a fixed number of users, then the step shape), each for a few seconds, in subprocesses:
Locust monkey-patches the standard library with gevent, which must not happen to pytest's process.
The unit tests load bench/loadtest_figures.py, the figures locustfile.py counts, which needs no Locust.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import CATSDOGS

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "locustfile.py"
REPORT = ROOT / "bench" / "loadtest_report.py"
FIGURES = ROOT / "bench" / "loadtest_figures.py"
FIXTURE_PHOTOS = sum(1 for path in CATSDOGS.rglob("*.jpg"))


@pytest.fixture(scope="module")
def lf() -> ModuleType:
    """The load test's figures (bench/loadtest_figures.py: what locustfile.py counts), without Locust."""
    spec = importlib.util.spec_from_file_location("catdog_loadtest_figures", FIGURES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_classify_sheds_hard_and_other_failures(lf: ModuleType) -> None:
    assert lf.classify(200, {}, failed=False) == lf.OK
    assert lf.classify(503, {"Retry-After": "2"}, failed=True) == lf.SHED
    assert lf.classify(503, {"retry-after": "1"}, failed=True) == lf.SHED  # header names are case-insensitive
    assert lf.classify(503, {}, failed=True) == lf.HARD  # a 503 without Retry-After is not a controlled shed
    assert lf.classify(503, None, failed=True) == lf.HARD
    assert lf.classify(500, {"Retry-After": "2"}, failed=True) == lf.HARD
    assert lf.classify(502, {}, failed=True) == lf.HARD
    assert lf.classify(0, None, failed=True) == lf.HARD  # connection refused, reset or timed out
    assert lf.classify(200, {}, failed=True) == lf.HARD  # answered 200 with a wrong body
    assert lf.classify(415, {}, failed=True) == lf.OTHER
    assert lf.classify(429, {"Retry-After": "1"}, failed=True) == lf.OTHER


def records(lf: ModuleType, latencies_s: list[float], outcome: str = "ok", name: str = "/api/predict") -> list:
    return [lf.Record(name, seconds * 1000, outcome, 0.0) for seconds in latencies_s]


def test_knee_is_the_first_step_whose_own_p95_passes_the_threshold(lf: ModuleType) -> None:
    step1 = lf.summarize_step(10, 30, records(lf, [0.2] * 100) + records(lf, [0.01] * 50, name="/health"))
    step2 = lf.summarize_step(20, 30, records(lf, [0.5] * 90 + [1.9] * 10))
    # step 3: 10% of its predictions take 3 s, so its own p95 is 3 s; the run's cumulative p95
    # (what Locust's statistics give) would still be under 2 s
    slow = records(lf, [0.6] * 90 + [3.0] * 10)
    sheds = records(lf, [0.005] * 400, outcome=lf.SHED)  # fast refusals must not pull the p95 down
    step3 = lf.summarize_step(30, 30, slow + sheds)
    step4 = lf.summarize_step(40, 30, records(lf, [5.0] * 100))
    steps = [step1, step2, step3, step4]

    assert step1.predict_p95_s == pytest.approx(0.2)
    assert step1.requests == 150 and step1.predictions == 100 and step1.requests_per_s == pytest.approx(5.0)
    assert step2.predict_p95_s == pytest.approx(1.9)
    assert step3.predict_p95_s == pytest.approx(3.0)
    assert step3.sheds == 400 and step3.shed_rate == pytest.approx(400 / 500)
    cumulative = [r.latency_ms / 1000 for r in records(lf, [0.2] * 100) + records(lf, [0.5] * 90 + [1.9] * 10) + slow]
    assert lf.percentile(cumulative, 95) < 2.0

    assert lf.find_knee(steps, 2.0) is step3
    assert lf.find_knee(steps, 1.0) is step2
    assert lf.find_knee(steps, 0.1) is step1
    assert lf.find_knee(steps, 10.0) is None
    assert lf.find_knee([lf.summarize_step(10, 30, [])], 2.0) is None  # no predictions: no p95, no knee
    assert "knee: 30 users" in lf.knee_text(steps, 2.0)
    assert "first sheds at 30 users" in lf.knee_text(steps, 2.0)
    assert "no knee up to 40 users" in lf.knee_text(steps, 10.0)


def test_step_log_groups_requests_by_step(lf: ModuleType) -> None:
    log = lf.StepLog()
    log.add(lf.Record("/api/predict", 100, lf.OK, 0.0))  # before any step: not counted
    log.begin(5, now=0.0)
    log.add(lf.Record("/api/predict", 100, lf.OK, 1.0))
    log.begin(10, now=15.0)
    log.add(lf.Record("/api/predict", 2500, lf.OK, 16.0))
    log.add(lf.Record("/api/predict", 3, lf.SHED, 16.0))
    log.close(now=20.0, partial=True)
    assert [(s.users, s.seconds, s.requests, s.partial) for s in log.steps] == [(5, 15.0, 1, False), (10, 5.0, 2, True)]
    assert log.steps[1].predict_p95_s == pytest.approx(2.5)
    assert log.close(now=30.0) is None  # nothing open


def test_percentile_is_nearest_rank(lf: ModuleType) -> None:
    assert lf.percentile([], 95) is None
    assert lf.percentile([3.0], 95) == 3.0
    assert lf.percentile(range(1, 101), 95) == 95
    assert lf.percentile(range(1, 101), 50) == 50
    assert lf.percentile([1, 2], 95) == 2


def test_photo_pool_hands_out_every_photo_once_before_any_repeat(lf: ModuleType, tmp_path: Path) -> None:
    for split in ("train", "test"):
        for folder in ("cats", "dogs"):
            (tmp_path / split / folder).mkdir(parents=True)
            for i in range(3):
                (tmp_path / split / folder / f"{folder}.{split}.{i}.jpg").write_bytes(b"x")
    (tmp_path / "loose.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a photo")
    pool = lf.PhotoPool(tmp_path, seed=3)
    assert len(pool) == 13
    first = [pool.next() for _ in range(13)]
    assert len({path for path, _ in first}) == 13 and pool.reshuffles == 0
    labels = {path.name: label for path, label in first}
    assert labels["cats.train.0.jpg"] == "cat" and labels["dogs.test.2.jpg"] == "dog" and labels["loose.png"] is None
    second = [pool.next() for _ in range(13)]
    assert pool.reshuffles == 1 and {p for p, _ in second} == {p for p, _ in first}
    assert [p for p, _ in second] != [p for p, _ in first]  # reshuffled (fixed by the seed)


def test_photo_pool_says_what_is_missing(lf: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no photo folder"):
        len(lf.PhotoPool(tmp_path / "absent"))
    with pytest.raises(SystemExit, match="no photos under"):
        len(lf.PhotoPool(tmp_path))


def test_summary_counts_sheds_and_cache_hits(lf: ModuleType) -> None:
    tally = lf.Tally(started=0.0, stopped=10.0, peak_users=4)
    for record, status in [
        (lf.Record("/api/predict", 200, lf.OK, 1), 200),
        (lf.Record("/api/predict", 4, lf.SHED, 1), 503),
        (lf.Record("/api/predict", 6, lf.SHED, 1), 503),
        (lf.Record("/api/status", 120_000, lf.HARD, 1), 0),
        (lf.Record("/health", 2, lf.OK, 1), 200),
    ]:
        tally.add(record, "POST" if record.name == "/api/predict" else "GET", status)
    tally.answer(cached=True, label="cat", predicted="cat")
    summary = lf.build_summary(tally, [], {"host": "http://x", "photos": 5, "reshuffles": 0})
    assert summary["requests"] == 5 and summary["failures"] == 3 and summary["requests_per_s"] == 0.5
    assert summary["sheds"] == 2 and summary["shed_rate"] == pytest.approx(0.4)
    assert summary["predict_shed_rate"] == pytest.approx(2 / 3)
    assert summary["shed_p50_ms"] == 4 and summary["shed_p95_ms"] == 6
    assert summary["hard_failures"] == 1 and summary["other_failures"] == 0
    assert summary["failures_by_kind"] == {"POST /api/predict 503": 2, "GET /api/status 0": 1}
    assert summary["cache_hit_rate"] == 1.0 and summary["right_answer_rate"] == 1.0
    assert "2 load sheds" in summary["summary"] and "1 hard failures" in summary["summary"]


def test_report_prefers_locusts_final_figures_to_its_csv(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("catdog_loadtest_report", REPORT)
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    columns = ["Type", "Name", *report.CSV_COLUMNS.values()]
    csv_path = tmp_path / "run_stats.csv"
    csv_path.write_text(
        ",".join(columns) + "\nPOST,/api/predict,90,0,210.5,200,390,400,3.0\n,Aggregated,100,0,150.0,100,380,400,3.3\n"
    )
    stats = report.read_stats(csv_path)
    from_csv = report.report_row(stats, {"host": "http://h", "peak_users": 5, "duration_s": 30.4}, "CPU X")
    assert from_csv == (
        "| 5 | - | 30 s | http://h | 150 / 210 | 100 / 200 | 380 / 390 | 400 / 400 | 3.30 | 0.00% | - | - | - | CPU X |"
    )
    final = {"requests": 104, "failures": 2, "average_ms": 151, "median_ms": 100, "p95_ms": 390, "p99_ms": 2500}
    summary = {
        "host": "http://h",
        "peak_users": 5,
        "spawn_rate": 5.0,
        "duration_s": 95,
        "shed_rate": 0.0192,
        "hard_failures": 0,
        "cache_hit_rate": 0.0,
        "locust_stats": {"Aggregated": {**final, "requests_per_s": 3.4}},
    }
    row = report.report_row(stats, summary, "CPU X")
    assert row == (
        "| 5 | 5.0 | 1 min 35 s | http://h | 151 / 210 | 100 / 200 | 390 / 390 | 2,500 / 400 | 3.40 | 1.92% | 1.92% "
        "| 0 | 0.00% | CPU X |"
    )


# ---------------------------------------------------------------- a real run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served_model(lite0_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny Lite0 model with its real evaluation (metrics.json), so /api/metrics answers 200."""
    from catdog.ml.artifacts import METRICS_JSON, write_json
    from catdog.ml.evaluate import evaluate_model
    from catdog.settings import get_settings

    model = Path(shutil.copytree(lite0_model, tmp_path_factory.mktemp("loadtest-model") / "tiny_lite0"))
    write_json(model / METRICS_JSON, evaluate_model(model, CATSDOGS, settings=get_settings(), progress=False))
    return model


@pytest.fixture(scope="module")
def server(served_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`catdog serve` with the tiny Lite0 model and the fixture photos; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "CATDOG_STATE_DIR": str(tmp_path_factory.mktemp("loadtest-state")),
        "CATDOG_DATA_DIR": str(CATSDOGS),
        "CATDOG_WARMUP_BATCH_SIZES": "1",
        "CATDOG_MAX_BATCH_SIZE": "4",
        "CATDOG_THREADS": "1",
        "CATDOG_WORKER": "false",
        "CATDOG_LOG_FORMAT": "text",
    }
    command = [sys.executable, "-m", "catdog.cli", "serve", "--model", str(served_model), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(process.stdout.read().decode() if process.stdout else "catdog serve exited")
            try:
                with urllib.request.urlopen(base + "/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() > deadline:
                raise TimeoutError("catdog serve never got ready")
            time.sleep(0.2)
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def run_locust(base: str, prefix: Path, users: int, seconds: int, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "CATDOG_LOADTEST_"))},
        "CATDOG_LOADTEST_PHOTOS": str(CATSDOGS),
        "CATDOG_LOADTEST_SUMMARY": f"{prefix}.json",
        "CATDOG_LOADTEST_WAIT": "0.05,0.3",
        "CATDOG_LOADTEST_SEED": "7",
        **env,
    }
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", "10"]
    command += ["-t", f"{seconds}s", "--host", base, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=seconds + 60, cwd=ROOT)


SUMMARY_FIELDS = {
    "host",
    "duration_s",
    "peak_users",
    "requests",
    "requests_per_s",
    "failures",
    "failure_rate",
    "sheds",
    "shed_rate",
    "shed_p50_ms",
    "shed_p95_ms",
    "hard_failures",
    "other_failures",
    "predict_requests",
    "predictions_answered",
    "cache_hits",
    "cache_hit_rate",
    "labelled",
    "right_answers",
    "right_answer_rate",
    "photos",
    "reshuffles",
    "steps",
    "knee",
    "summary",
    "locust_stats",
}


def test_a_real_run_against_catdog_serve(server: str, tmp_path: Path) -> None:
    prefix = tmp_path / "run"
    result = run_locust(server, prefix, users=4, seconds=6)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output  # 0: no hard and no other failures
    summary = json.loads(Path(f"{prefix}.json").read_text())
    assert summary.keys() >= SUMMARY_FIELDS
    assert summary["hard_failures"] == 0 and summary["other_failures"] == 0, summary["failures_by_kind"]
    assert summary["failures"] == summary["sheds"]
    assert summary["requests"] == summary["locust_requests"] > 0
    assert summary["failures"] == summary["locust_failures"]
    assert summary["predictions_answered"] > 0 and summary["photos"] == FIXTURE_PHOTOS
    assert summary["labelled"] == summary["predictions_answered"]  # every fixture photo sits in cats/ or dogs/
    # the server caches by content: a hit needs a repeat, and the pool repeats nothing before it is exhausted
    assert summary["cache_hits"] <= max(0, summary["predictions_answered"] - FIXTURE_PHOTOS)
    assert summary["peak_users"] == 4 and summary["steps"] == [] and summary["knee"] is None
    assert summary["summary"] in result.stdout  # the paragraph is printed too
    assert summary["after_load"]["statuses"] == [200] * 5  # the service answers right after the load
    assert "Right after the load, 5 of 5 predictions" in summary["summary"]

    report = subprocess.run(
        [sys.executable, str(REPORT), str(prefix)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert report.returncode == 0, report.stderr
    lines = report.stdout.strip().splitlines()
    header, row = lines[-3], lines[-1]
    assert header.startswith("| users |") and row.startswith("| 4 |")
    assert row.count(" | ") == header.count(" | ")  # one cell per column
    assert server in row and "cores" in row and "0.00%" in row
    final = summary["locust_stats"]["Aggregated"]
    assert final["requests"] == summary["requests"]
    assert f"| {final['requests_per_s']:.2f} |" in row  # Locust's final figures, not its CSV's last write


def test_the_step_shape_names_the_knee(server: str, tmp_path: Path) -> None:
    prefix = tmp_path / "step"
    step_env = {
        "CATDOG_LOADTEST_SHAPE": "step",
        "CATDOG_LOADTEST_STEP_USERS": "2",
        "CATDOG_LOADTEST_STEP_SECONDS": "3",
        "CATDOG_LOADTEST_MAX_USERS": "4",
        "CATDOG_LOADTEST_KNEE_S": "0.000001",  # any answered prediction passes it: the first step is the knee
    }
    result = run_locust(server, prefix, users=1, seconds=30, **step_env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = json.loads(Path(f"{prefix}.json").read_text())
    assert [step["users"] for step in summary["steps"]] == [2, 4], summary["steps"]
    assert all(step["requests"] > 0 for step in summary["steps"])
    assert summary["steps"][0]["seconds"] == pytest.approx(3, abs=1.5)
    assert summary["duration_s"] < 15  # the shape ended the run, not -t
    assert summary["knee_users"] == 2 and summary["knee"].startswith("knee: 2 users")
    assert "| users | seconds | requests/s |" in result.stdout and summary["knee"] in result.stdout
