"""Serving under load, against real `catdog serve` processes on 127.0.0.1 (bounded in count and time).

Four measurements, each printed with the CPU it ran on:
1. batching gain: CLIENTS concurrent clients (no think time, distinct bytes so nothing is
   cached) against the server with micro-batching on (max batch 16) and off (max batch 1), for
   each precision whose graph the model has; images/s, p50/p95 latency, errors;
2. a repeated image: the server time (`prediction_time`) and client latency of cache hits;
3. overload: more clients than the queue bound; how fast the 503 comes, its Retry-After, and
   whether full service is back as soon as the load drops;
4. the raw batch throughput of the same model through `catdog predict` on the same photos, as
   ../shared/checks/webcheck.py measures it, for the served/raw ratio.

    .venv/bin/python bench/serving.py --model models/vgg16 [--seconds 30] [--clients 32]
    .venv/bin/python bench/serving.py --model models/efficientnet_lite0 --only cache,overload

Each server is started with its own state folder and stopped by its process id.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from catdog.ml.artifacts import MODEL_GRAPHS
from catdog.ml.precision import describe_cpu_line

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "catsdogs" / "test"
CATDOG = ROOT / ".venv" / "bin" / "catdog"


@dataclass
class Load:
    images_per_s: float
    p50: float
    p95: float
    ok: int
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(base: str, data: bytes, name: str) -> tuple[int, dict[str, object], dict[str, str], float]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        base + "/api/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, method="POST"
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, headers, raw = response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, _lower(exc.headers.items()), exc.read()
    except OSError as exc:
        return 0, {"detail": str(exc)}, {}, time.perf_counter() - started
    elapsed = time.perf_counter() - started
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {}
    return status, answer, headers, elapsed


def _lower(items: object) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}  # type: ignore[attr-defined]


def server_ms(headers: dict[str, str]) -> float:
    """The server's own time for a request, from its Server-Timing header (app;dur=ms)."""
    for part in headers.get("server-timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name == "app" and duration:
            return float(duration)
    return float("nan")


@contextmanager
def server(model: Path, **settings: object) -> Iterator[str]:
    """`catdog serve` with CATDOG_<KEY>=value settings; yields its base URL once /ready says 200."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="catdog-bench-") as state:
        env = {**os.environ, "CATDOG_STATE_DIR": state, "CATDOG_LOG_LEVEL": "WARNING"}
        env |= {f"CATDOG_{key.upper()}": str(value) for key, value in settings.items()}
        process = subprocess.Popen(
            [str(CATDOG), "serve", "--model", str(model), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, process)
            yield base
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"catdog serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(base + "/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.5)
    raise TimeoutError("server not ready")


def load(base: str, photos: list[bytes], clients: int, seconds: float) -> Load:
    """Closed loop: each client sends the next photo as soon as its answer came (webcheck's load)."""
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop = time.time() + seconds

    def client() -> None:
        while time.time() < stop:
            with lock:
                i = next(counter)
            # bytes after the JPEG end marker change the content hash, not the picture: no cache hits
            data = photos[i % len(photos)] + i.to_bytes(4, "big")
            status, _, _, elapsed = post(base, data, f"{i}.jpg")
            with lock:
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors.append(status)

    started = time.time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.time() - started
    cuts = statistics.quantiles(latencies, n=20) if len(latencies) > 20 else [float("nan")] * 19
    return Load(len(latencies) / elapsed, statistics.median(latencies), cuts[-1], len(latencies), len(errors))


def batching_gain(model: Path, photos: list[bytes], clients: int, seconds: float, max_batch: int) -> None:
    precisions = [p for p, name in MODEL_GRAPHS.items() if (model / name).is_file()]
    print(f"\n## Batching gain: {clients} clients, {seconds:.0f} s each, {model}")
    print("| precision | max batch | images/s | p50 s | p95 s | ok | errors | gain |")
    print("|---|---|---|---|---|---|---|---|")
    for precision in precisions:
        results = {}
        for batch in (max_batch, 1):
            queue = max(2 * clients, batch)
            with server(model, precision=precision, max_batch_size=batch, max_queue_size=queue) as base:
                load(base, photos, clients, min(10.0, seconds / 3))  # reach a steady state first
                results[batch] = load(base, photos, clients, seconds)
        for batch, r in results.items():
            gain = f"{r.images_per_s / results[1].images_per_s:.2f}x" if batch != 1 else "1.00x"
            figures = f"{r.images_per_s:.2f} | {r.p50:.2f} | {r.p95:.2f} | {r.ok} | {r.errors}"
            print(f"| {precision} | {batch} | {figures} | {gain} |")


def repeated_image(model: Path, photo: bytes, count: int) -> None:
    with server(model, warmup_batch_sizes="1") as base:
        post(base, photo, "first.jpg")
        server_ms, client_ms, cached = [], [], 0
        for i in range(count):
            status, answer, _, elapsed = post(base, photo, f"again{i}.jpg")
            if status == 200:
                server_ms.append(float(answer["prediction_time"]) * 1000)  # type: ignore[arg-type]
                client_ms.append(elapsed * 1000)
                cached += bool(answer.get("cached"))
    print(f"\n## A repeated image: {count} requests, one at a time, {model}")
    print(f"cache hits {cached}/{count}; server time p50 {statistics.median(server_ms):.2f} ms, ", end="")
    p95 = statistics.quantiles(server_ms, n=20)[-1]
    print(f"p95 {p95:.2f} ms; client round trip p50 {statistics.median(client_ms):.2f} ms")


def overload(model: Path, photos: list[bytes], queue: int, clients: int) -> None:
    """Hold the queue full with `clients` senders, time the refusals, then check recovery."""
    settings = {"max_batch_size": min(queue, 16), "max_queue_size": queue, "max_batch_files": min(queue, 32)}
    with server(model, prediction_cache_size=0, **settings) as base:
        refusals: list[tuple[float, str, float]] = []
        done = threading.Event()
        lock = threading.Lock()
        counter = iter(range(10**9))

        def client() -> None:
            while not done.is_set():
                with lock:
                    i = next(counter)
                status, _, headers, elapsed = post(base, photos[i % len(photos)] + i.to_bytes(4, "big"), f"{i}.jpg")
                if status == 503:
                    with lock:
                        refusals.append((elapsed, headers.get("retry-after", ""), server_ms(headers)))
                    time.sleep(0.05)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(20)
        done.set()
        for thread in threads:
            thread.join()
        after = [post(base, photos[i] + b"after" + bytes([i]), f"after{i}.jpg")[0] for i in range(5)]
    times = sorted(t for t, _, _ in refusals)
    on_server = sorted(ms for _, _, ms in refusals)
    print(f"\n## Overload: {clients} clients against a queue bound of {queue} images, 20 s, {model}")
    if times:
        p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
        worst = times[-1] * 1000
        print(
            f"503 answers {len(times)}: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {worst:.1f} ms; ", end=""
        )
        print(f"Retry-After values {sorted({r for _, r, _ in refusals})}")
        server_p95 = on_server[int(0.95 * (len(on_server) - 1))]
        print(f"server time of the 503s: p50 {statistics.median(on_server):.2f} ms, p95 {server_p95:.2f} ms")
    else:
        print("no 503 answers: the load never passed the bound")
    print(f"right after the load: statuses {after} (full service: {all(s == 200 for s in after)})")


def raw_throughput(model: Path, files: list[Path]) -> None:
    """webcheck's method: (time for 16+96 files - time for 16) / 96, through `catdog predict`."""

    def seconds(k: int) -> float:
        started = time.perf_counter()
        subprocess.run(
            [str(CATDOG), "predict", "--model", str(model), "--json", *map(str, files[:k])],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started

    small, big = seconds(16), seconds(112)
    print(f"\n## Raw batch throughput through the CLI (webcheck's method), {model}")
    print(f"{96 / (big - small):.2f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "vgg16")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder with cats/ and dogs/ photos")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--only", default="gain,cache,overload,raw", help="comma-separated: gain,cache,overload,raw")
    args = parser.parse_args()
    files = sorted(p for c in ("cats", "dogs") for p in (args.data / c).iterdir() if p.suffix.lower() == ".jpg")
    random.Random(1).shuffle(files)
    photos = [p.read_bytes() for p in files[:200]]
    print(f"CPU: {describe_cpu_line()}")
    parts = set(args.only.split(","))
    if "gain" in parts:
        batching_gain(args.model, photos, args.clients, args.seconds, args.max_batch)
    if "raw" in parts:
        raw_throughput(args.model, files)
    if "cache" in parts:
        repeated_image(args.model, photos[0], 300)
    if "overload" in parts:
        overload(args.model, photos, queue=16, clients=48)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
