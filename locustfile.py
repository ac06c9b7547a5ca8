"""Load testing catdog with Locust: the spec's mix of requests, real photos, honest figures.

    make loadtest USERS=100 SPAWN=10 TIME=2m [HOST=http://127.0.0.1:8000] [SHAPE=step]
    .venv/bin/locust -f locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8000
    .venv/bin/locust -f locustfile.py --host http://127.0.0.1:8000     # the web UI on http://localhost:8089

What each simulated user does, with `wait_time = between(1, 3)` between requests (weights):
POST /api/predict with a real photo (10), GET /api/status (2), /api/metrics (1), /api/dataset-stats (1),
/health (1), one of the pages /, /predict-page, /monitoring, /retrain-page (1).

- **Real photos, no flattering cache.** Every image under CATDOG_LOADTEST_PHOTOS (default
  ../shared/data/catsdogs next to this file when it exists, else $CATDOG_DATA_DIR, else data/),
  train and test splits, cats and dogs, is sent from one shuffled order shared by all users:
  no photo is sent twice before every photo has been sent once (then the order is reshuffled).
  The server caches answers by content, so answers with `"cached": true` are counted and the
  cache hit rate is printed; with the development set's ~9,600 photos a run sees repeats only
  when it sends more predictions than that (and on the set's few duplicate photos). The label
  comes from the folder (cats/dogs): the right-answer rate is printed too (train photos included,
  so it is not a test accuracy).
- **Failures as Locust counts them** (any non-2xx, a connection error, a timeout: the client
  gives up after CATDOG_LOADTEST_TIMEOUT, 120 s, so a hung request is a failure, not a hang),
  then classified: a 503 that carries Retry-After is a **shed** (the server refusing work past
  its queue bound, as designed: counted with its rate and its own p50/p95, which must be quick);
  any other 5xx, a connection error, a timeout or a 200 with a wrong body is a **hard** failure;
  a 4xx is an **other** failure (the load test or the server is wrong).
- **The knee** (CATDOG_LOADTEST_SHAPE=step only): CATDOG_LOADTEST_STEP_USERS (10) more users every
  CATDOG_LOADTEST_STEP_SECONDS (30) up to CATDOG_LOADTEST_MAX_USERS (200); at each step's end the
  step's own requests/s, prediction p50/p95 (answered predictions and failures; sheds are
  excluded, they have their own figures) and shed rate are printed; the knee is the first step
  whose prediction p95 passes CATDOG_LOADTEST_KNEE_S (2 s). The shape ignores -u; -r sets how fast
  each step's users arrive, and -t still ends the run.

At the end one paragraph sums the run up (and the step table with the knee); with
CATDOG_LOADTEST_SUMMARY=FILE the same figures are written to FILE as JSON, which
`bench/loadtest_report.py` turns into one Markdown table row. The exit status is 0 unless there
were hard or other failures (sheds are the server working as designed). Other knobs:
CATDOG_LOADTEST_WAIT ("1,3": think time in seconds), CATDOG_LOADTEST_SEED (the pool's shuffle).
The figures are this process's: run Locust as one process (no --processes, no workers).
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, LoadTestShape, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))  # as bench/'s scripts import their siblings
from loadtest_figures import (
    KNEE_S,
    PAGES,
    PREDICT,
    STEP_HEADER,
    TIMEOUT_S,
    WAIT_S,
    PhotoPool,
    Record,
    StepLog,
    Tally,
    build_summary,
    classify,
    default_photos_root,
    env_number,
    ms,
    step_line,
)

RECOVERY_PROBES = 5  # predictions sent one by one right after the load stops: does the service recover?

# ---------------------------------------------------------------- Locust

SEED = os.environ.get("CATDOG_LOADTEST_SEED", "").strip()
POOL = PhotoPool(default_photos_root(), int(env_number("CATDOG_LOADTEST_SEED", 0)) if SEED else None)
TALLY = Tally()
STEPS = StepLog()
_SUMMARY: dict[str, Any] = {}


def locust_figures(stats: Any) -> dict[str, dict[str, float | int | None]]:
    """Locust's own final figures, all requests ("Aggregated") and predictions: its _stats.csv is
    rewritten once a second while the run goes, so it can miss the requests of the last second."""
    entries = {"Aggregated": stats.total, PREDICT: stats.entries.get((PREDICT, "POST"))}
    figures: dict[str, dict[str, float | int | None]] = {}
    for name, entry in entries.items():
        if entry is None or not entry.num_requests:
            continue
        figures[name] = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "average_ms": ms(entry.avg_response_time),
            "median_ms": entry.median_response_time,
            "p95_ms": entry.get_response_time_percentile(0.95),
            "p99_ms": entry.get_response_time_percentile(0.99),
            "requests_per_s": round(entry.total_rps, 2),
        }
    return figures


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    try:
        count = len(POOL)
    except SystemExit as exc:
        print(f"locustfile: {exc}", file=sys.stderr)
        raise
    print(f"locustfile: {count} photos under {POOL.root}", file=sys.stderr)


@events.test_start.add_listener
def _on_test_start(**_: Any) -> None:
    if TALLY.started is None:
        TALLY.started = time.monotonic()


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_: Any) -> None:
    TALLY.peak_users = max(TALLY.peak_users, user_count)


@events.request.add_listener
def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response: Any = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    headers = getattr(response, "headers", None)
    record = Record(name, float(response_time), classify(status, headers, exception is not None), time.monotonic())
    TALLY.add(record, request_type, status)
    STEPS.add(record)


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    if TALLY.started is not None and TALLY.stopped is None:
        TALLY.stopped = time.monotonic()
    STEPS.close(time.monotonic(), partial=True)


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    _on_test_stop()
    options = environment.parsed_options
    context = {
        "host": environment.host or (options.host if options else None),
        "users": getattr(options, "num_users", None),
        "spawn_rate": getattr(options, "spawn_rate", None),
        "run_time": getattr(options, "run_time", None),
        "shape": os.environ.get("CATDOG_LOADTEST_SHAPE") or None,
        "photos_root": str(POOL.root),
        "photos": len(POOL),
        "reshuffles": POOL.reshuffles,
        "locust_requests": environment.stats.total.num_requests,
        "locust_failures": environment.stats.total.num_failures,
        "locust_stats": locust_figures(environment.stats),
    }
    _SUMMARY.clear()
    _SUMMARY.update(build_summary(TALLY, STEPS.steps, context))
    if context["host"]:
        _SUMMARY["after_load"] = recovery_probe(str(context["host"]))
        _SUMMARY["summary"] += " " + recovery_text(_SUMMARY["after_load"])
    target = os.environ.get("CATDOG_LOADTEST_SUMMARY", "").strip()
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_SUMMARY, indent=2) + "\n")
    if environment.process_exit_code is None:
        environment.process_exit_code = 1 if _SUMMARY["hard_failures"] or _SUMMARY["other_failures"] else 0


def recovery_probe(host: str, probes: int = RECOVERY_PROBES) -> dict[str, Any]:
    """Right after the load: predictions one at a time, each with its status and latency (ms)."""
    import requests

    found: dict[str, Any] = {"statuses": [], "latencies_ms": []}
    for _ in range(probes):
        path, _label = POOL.next()
        started = time.perf_counter()
        try:
            answer = requests.post(
                host.rstrip("/") + PREDICT, files={"file": (path.name, path.read_bytes())}, timeout=60
            )
            status = answer.status_code
        except requests.RequestException:
            status = 0
        found["statuses"].append(status)
        found["latencies_ms"].append(round((time.perf_counter() - started) * 1000, 1))
    return found


def recovery_text(found: dict[str, Any]) -> str:
    ok = sum(status == 200 for status in found["statuses"])
    return (
        f"Right after the load, {ok} of {len(found['statuses'])} predictions sent one by one answered 200 "
        f"(latencies {', '.join(f'{v:.0f}' for v in found['latencies_ms'])} ms)."
    )


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    """After Locust's own tables: the steps, the knee, the paragraph."""
    if not _SUMMARY:
        return
    if _SUMMARY["steps"]:
        print("\n" + STEP_HEADER + "\n|---|---|---|---|---|---|---|---|")
        for step in STEPS.steps:
            print(step_line(step))
        print(_SUMMARY["knee"])
    print("\n" + _SUMMARY["summary"], flush=True)


class CatdogUser(HttpUser):
    """A visitor: mostly predictions with real photos, some status polling and page views."""

    wait_time = between(*WAIT_S)

    @task(10)
    def predict(self) -> None:
        path, label = POOL.next()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files = {"file": (path.name, path.read_bytes(), kind)}
        with self.client.post(PREDICT, files=files, name=PREDICT, timeout=TIMEOUT_S, catch_response=True) as response:
            if response.status_code != 200:
                return  # Locust's verdict: a failure, classified by _on_request
            try:
                answer = response.json()
            except ValueError:
                response.failure("200 without a JSON body")
                return
            predicted = answer.get("predicted_class") if isinstance(answer, dict) else None
            if predicted not in ("cat", "dog"):
                response.failure(f"200 without predicted_class cat/dog: {str(answer)[:200]}")
                return
            TALLY.answer(answer.get("cached") is True, label, predicted)

    @task(2)
    def status(self) -> None:
        self.client.get("/api/status", timeout=TIMEOUT_S)

    @task(1)
    def metrics(self) -> None:
        self.client.get("/api/metrics", timeout=TIMEOUT_S)

    @task(1)
    def dataset_stats(self) -> None:
        self.client.get("/api/dataset-stats", timeout=TIMEOUT_S)

    @task(1)
    def health(self) -> None:
        self.client.get("/health", timeout=TIMEOUT_S)

    @task(1)
    def page(self) -> None:
        self.client.get(random.choice(PAGES), timeout=TIMEOUT_S)


if os.environ.get("CATDOG_LOADTEST_SHAPE", "").strip() not in ("", "step"):
    raise SystemExit(f"CATDOG_LOADTEST_SHAPE={os.environ['CATDOG_LOADTEST_SHAPE']!r}: the only shape is 'step'")

if os.environ.get("CATDOG_LOADTEST_SHAPE", "").strip() == "step":
    # Defined only when asked for: Locust runs any shape class it finds in the locustfile.

    class StepShape(LoadTestShape):
        """STEP_USERS more users every STEP_SECONDS up to MAX_USERS; each step's figures at its end."""

        use_common_options = True  # -r and -t apply; -u does not (the steps set the users)

        def __init__(self) -> None:
            super().__init__()
            self.step_users = int(env_number("CATDOG_LOADTEST_STEP_USERS", 10, minimum=1))
            self.step_seconds = env_number("CATDOG_LOADTEST_STEP_SECONDS", 30, minimum=1)
            self.max_users = int(env_number("CATDOG_LOADTEST_MAX_USERS", 200, minimum=1))
            self.count = math.ceil(self.max_users / self.step_users)
            print(
                f"locustfile: steps of {self.step_users} users every {self.step_seconds:g} s up to {self.max_users}; "
                f"knee at prediction p95 > {KNEE_S:g} s\n{STEP_HEADER}\n|---|---|---|---|---|---|---|---|",
                flush=True,
            )

        def tick(self) -> tuple[int, float] | None:
            now = time.monotonic()
            index = int(self.get_run_time() // self.step_seconds)
            if index >= self.count:
                STEPS.close(now)
                return None
            users = min((index + 1) * self.step_users, self.max_users)
            if users != STEPS.current_users:
                STEPS.begin(users, now)
            options = self.runner.environment.parsed_options if self.runner else None
            spawn_rate = getattr(options, "spawn_rate", None) or float(self.step_users)
            return users, float(spawn_rate)
