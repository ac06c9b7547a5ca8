"""The figures of a Locust run against catdog, apart from Locust itself (locustfile.py runs them).

The photo pool (every photo once before any repeats), the outcome of each request (ok, shed: a
503 with Retry-After, hard, other), the tally of a run, the per-step figures and the knee (the
first step whose prediction p95 passes CATDOG_LOADTEST_KNEE_S), and the summary written as JSON
for bench/loadtest_report.py. Nothing here imports Locust, so the unit tests need no gevent.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the project
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
