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
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from locust import HttpUser, LoadTestShape, between, events, task

ROOT = Path(__file__).resolve().parent
PREDICT = "/api/predict"
PAGES = ("/", "/predict-page", "/monitoring", "/retrain-page")
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".mpo"}
)
FOLDER_LABELS = {"cats": "cat", "cat": "cat", "dogs": "dog", "dog": "dog"}

OK, SHED, HARD, OTHER = "ok", "shed", "hard", "other"


def env_number(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SystemExit(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def env_wait() -> tuple[float, float]:
    raw = os.environ.get("CATDOG_LOADTEST_WAIT", "").strip() or "1,3"
    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        raise SystemExit(f"CATDOG_LOADTEST_WAIT={raw!r} must be MIN,MAX seconds, e.g. 1,3") from None
    if not 0 <= low <= high:
        raise SystemExit(f"CATDOG_LOADTEST_WAIT={raw!r} must be MIN,MAX seconds with 0 <= MIN <= MAX")
    return low, high


TIMEOUT_S = env_number("CATDOG_LOADTEST_TIMEOUT", 120.0, minimum=0.001)
KNEE_S = env_number("CATDOG_LOADTEST_KNEE_S", 2.0)
WAIT_S = env_wait()


# ---------------------------------------------------------------- photos


def default_photos_root() -> Path:
    configured = os.environ.get("CATDOG_LOADTEST_PHOTOS", "").strip()
    if configured:
        return Path(configured)
    shared = ROOT.parent / "shared" / "data" / "catsdogs"
    if shared.is_dir():
        return shared
    data_dir = os.environ.get("CATDOG_DATA_DIR", "").strip()
    return Path(data_dir) if data_dir else ROOT / "data"


def label_of(path: Path, root: Path) -> str | None:
    """cat or dog from the nearest folder named cats/dogs (cat/dog) between root and the file."""
    for part in reversed(path.relative_to(root).parts[:-1]):
        label = FOLDER_LABELS.get(part.lower())
        if label is not None:
            return label
    return None


class PhotoPool:
    """Every image under a folder, handed out in one shuffled order shared by all users.

    Without replacement: a photo comes again only after every photo has been handed out once, then
    the order is reshuffled. The list of files is made on first use; the bytes are read per request.
    """

    def __init__(self, root: Path, seed: int | None = None) -> None:
        self.root = root
        self._shuffles = 0
        self._random = random.Random(seed)
        self._photos: list[tuple[Path, str | None]] | None = None
        self._order: list[int] = []
        self._lock = threading.Lock()

    def photos(self) -> list[tuple[Path, str | None]]:
        with self._lock:
            return self._list()

    def _list(self) -> list[tuple[Path, str | None]]:
        if self._photos is None:
            if not self.root.is_dir():
                raise SystemExit(
                    f"no photo folder at {self.root}: set CATDOG_LOADTEST_PHOTOS (or CATDOG_DATA_DIR) to one"
                )
            found = sorted(
                path for path in self.root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
            )
            if not found:
                raise SystemExit(f"no photos under {self.root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            self._photos = [(path, label_of(path, self.root)) for path in found]
        return self._photos

    def __len__(self) -> int:
        return len(self.photos())

    def next(self) -> tuple[Path, str | None]:
        with self._lock:
            photos = self._list()
            if not self._order:
                self._order = list(range(len(photos)))
                self._random.shuffle(self._order)
                self._shuffles += 1
            return photos[self._order.pop()]

    @property
    def reshuffles(self) -> int:
        """Times every photo had been handed out and the order was shuffled again."""
        return max(0, self._shuffles - 1)


# ---------------------------------------------------------------- outcomes


def has_retry_after(headers: Mapping[str, str] | None) -> bool:
    return headers is not None and any(name.lower() == "retry-after" for name in headers)


def classify(status: int, headers: Mapping[str, str] | None, failed: bool) -> str:
    """One request's outcome: ok, shed (503 with Retry-After), other (4xx) or hard (everything else that failed).

    `failed` is Locust's verdict (non-2xx, no answer, or marked failed); status 0 is no answer at
    all (connection refused or reset, timeout).
    """
    if not failed:
        return OK
    if status == 503 and has_retry_after(headers):
        return SHED
    if 400 <= status < 500:
        return OTHER
    return HARD


@dataclass
class Record:
    name: str
    latency_ms: float
    outcome: str
    at: float  # time.monotonic() when the answer (or the failure) came


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass
class Tally:
    """Every request of the run, as this process saw it."""

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures_by_kind: Counter[str] = field(default_factory=Counter)  # "GET /api/status 503", "POST /api/predict 0"
    shed_ms: list[float] = field(default_factory=list)
    predict_requests: int = 0
    predict_sheds: int = 0
    answered: int = 0  # predictions answered 200 with a class
    cache_hits: int = 0
    labelled: int = 0  # answered predictions of photos whose folder says cat or dog
    right: int = 0
    started: float | None = None
    stopped: float | None = None
    peak_users: int = 0

    def add(self, record: Record, method: str, status: int) -> None:
        self.requests += 1
        self.outcomes[record.outcome] += 1
        if record.outcome != OK:
            self.failures_by_kind[f"{method} {record.name} {status}"] += 1
        if record.outcome == SHED:
            self.shed_ms.append(record.latency_ms)
        if record.name == PREDICT:
            self.predict_requests += 1
            self.predict_sheds += record.outcome == SHED

    def answer(self, cached: bool, label: str | None, predicted: str) -> None:
        self.answered += 1
        self.cache_hits += cached
        if label is not None:
            self.labelled += 1
            self.right += predicted == label


# ---------------------------------------------------------------- steps and the knee


@dataclass
class StepFigures:
    users: int
    seconds: float
    requests: int
    predictions: int  # predict requests, sheds included
    answered: int  # predictions answered 200
    sheds: int
    hard: int
    other: int
    predict_p50_s: float | None
    predict_p95_s: float | None
    partial: bool = False  # the run ended before the step did

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def predictions_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    @property
    def shed_rate(self) -> float:
        """Sheds among the step's predictions."""
        return rate(self.sheds, self.predictions)


def summarize_step(users: int, seconds: float, records: Iterable[Record], partial: bool = False) -> StepFigures:
    """A step's figures from its own requests only (Locust's statistics are cumulative over the run)."""
    records = list(records)
    predictions = [r for r in records if r.name == PREDICT]
    served = [r.latency_ms / 1000 for r in predictions if r.outcome != SHED]
    return StepFigures(
        users=users,
        seconds=seconds,
        requests=len(records),
        predictions=len(predictions),
        answered=sum(r.outcome == OK for r in predictions),
        sheds=sum(r.outcome == SHED for r in records),
        hard=sum(r.outcome == HARD for r in records),
        other=sum(r.outcome == OTHER for r in records),
        predict_p50_s=percentile(served, 50),
        predict_p95_s=percentile(served, 95),
        partial=partial,
    )


def find_knee(steps: Iterable[StepFigures], threshold_s: float) -> StepFigures | None:
    """The first step whose prediction p95 passes the threshold; None if none does."""
    for step in steps:
        if step.predict_p95_s is not None and step.predict_p95_s > threshold_s:
            return step
    return None


class StepLog:
    """Requests grouped by the step they completed in."""

    def __init__(self) -> None:
        self.steps: list[StepFigures] = []
        self.current_users: int | None = None
        self._began = 0.0
        self._records: list[Record] = []

    def begin(self, users: int, now: float) -> None:
        self.close(now)
        self.current_users, self._began, self._records = users, now, []

    def add(self, record: Record) -> None:
        if self.current_users is not None:
            self._records.append(record)

    def close(self, now: float, partial: bool = False) -> StepFigures | None:
        if self.current_users is None:
            return None
        step = summarize_step(self.current_users, now - self._began, self._records, partial)
        self.steps.append(step)
        self.current_users, self._records = None, []
        print(step_line(step), flush=True)
        return step


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


STEP_HEADER = "| users | seconds | requests/s | predictions/s | predict p50 | predict p95 | shed rate | hard |"


def step_line(step: StepFigures) -> str:
    return (
        f"| {step.users} | {step.seconds:.0f}{' (cut short)' if step.partial else ''} | {step.requests_per_s:.1f} | "
        f"{step.predictions_per_s:.1f} | {seconds_text(step.predict_p50_s)} | {seconds_text(step.predict_p95_s)} | "
        f"{step.shed_rate:.1%} | {step.hard} |"
    )


def knee_text(steps: list[StepFigures], threshold_s: float) -> str:
    if not steps:
        return "no step completed"
    knee = find_knee(steps, threshold_s)
    first_shed = next((step for step in steps if step.sheds), None)
    text = (
        f"knee: {knee.users} users (prediction p95 {seconds_text(knee.predict_p95_s)} > {threshold_s:g} s)"
        if knee is not None
        else f"no knee up to {steps[-1].users} users (prediction p95 stayed within {threshold_s:g} s)"
    )
    if first_shed is not None:
        text += f"; first sheds at {first_shed.users} users ({first_shed.shed_rate:.1%} of its predictions)"
    return text


# ---------------------------------------------------------------- the summary


def ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def build_summary(tally: Tally, steps: list[StepFigures], context: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure printed at the end, as one JSON-ready dict."""
    failures = tally.requests - tally.outcomes[OK]
    duration = (tally.stopped or time.monotonic()) - tally.started if tally.started is not None else 0.0
    summary: dict[str, Any] = {
        **context,
        "duration_s": round(duration, 1),
        "peak_users": tally.peak_users,
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / duration, 2) if duration > 0 else 0.0,
        "failures": failures,
        "failure_rate": rate(failures, tally.requests),
        "sheds": tally.outcomes[SHED],
        "shed_rate": rate(tally.outcomes[SHED], tally.requests),
        "shed_p50_ms": ms(percentile(tally.shed_ms, 50)),
        "shed_p95_ms": ms(percentile(tally.shed_ms, 95)),
        "hard_failures": tally.outcomes[HARD],
        "other_failures": tally.outcomes[OTHER],
        "failures_by_kind": dict(tally.failures_by_kind.most_common()),
        "predict_requests": tally.predict_requests,
        "predict_shed_rate": rate(tally.predict_sheds, tally.predict_requests),
        "predictions_answered": tally.answered,
        "cache_hits": tally.cache_hits,
        "cache_hit_rate": rate(tally.cache_hits, tally.answered),
        "labelled": tally.labelled,
        "right_answers": tally.right,
        "right_answer_rate": rate(tally.right, tally.labelled),
        "knee_threshold_s": KNEE_S,
        "steps": [{**asdict(step), "requests_per_s": round(step.requests_per_s, 2)} for step in steps],
        "knee_users": None,
        "knee": None,
    }
    if steps:
        knee = find_knee(steps, KNEE_S)
        summary["knee_users"] = knee.users if knee is not None else None
        summary["knee"] = knee_text(steps, KNEE_S)
    summary["summary"] = summary_text(summary)
    return summary


def summary_text(s: Mapping[str, Any]) -> str:
    shed_part = (
        f"{s['sheds']} load sheds (503 with Retry-After: {s['shed_rate']:.2%} of requests, "
        f"{s['predict_shed_rate']:.2%} of predictions; p50 {s['shed_p50_ms']} ms, p95 {s['shed_p95_ms']} ms)"
        if s["sheds"]
        else "0 load sheds"
    )
    return (
        f"catdog load test against {s.get('host')}: {s['requests']} requests in {s['duration_s']} s "
        f"({s['requests_per_s']}/s) at up to {s['peak_users']} users; {s['failures']} failures "
        f"({s['failure_rate']:.2%}): {shed_part}, {s['hard_failures']} hard failures (other 5xx, connection "
        f"errors, timeouts, wrong answers) and {s['other_failures']} other (4xx). Predictions: "
        f"{s['predictions_answered']} answered of {s['predict_requests']} sent, cache hits {s['cache_hits']} "
        f"({s['cache_hit_rate']:.1%}), right answers {s['right_answers']} of {s['labelled']} labelled "
        f"({s['right_answer_rate']:.1%}; train photos included, so not a test accuracy); "
        f"{s.get('photos')} photos in the pool, reshuffled {s.get('reshuffles')} times."
    )


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
    target = os.environ.get("CATDOG_LOADTEST_SUMMARY", "").strip()
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_SUMMARY, indent=2) + "\n")
    if environment.process_exit_code is None:
        environment.process_exit_code = 1 if _SUMMARY["hard_failures"] or _SUMMARY["other_failures"] else 0


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
