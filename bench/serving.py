"""Serving under load, against real `catdog serve` processes on 127.0.0.1 (bounded in count and time).

Four measurements, each printed with the CPU it ran on:
1. batching gain: CLIENTS concurrent clients (no think time, distinct bytes so nothing is
   cached) against the server with micro-batching on (max batch 16) and off (max batch 1), for
   each precision whose graph the model has; images/s, p50/p95 latency, errors;
2. a repeated image: the server time (`prediction_time`) and client latency of cache hits;
3. overload: more clients than the queue bound; how fast the 503 comes, its Retry-After, and
   whether full service is back as soon as the load drops;
4. the raw batch throughput of the same model through `catdog predict` on the same photos, as
   ../shared/checks/webcheck.py measures it, for the served/raw ratio;
5. hot swap (`--only swap`, not in the default set): CLIENTS concurrent clients while production
   is switched twice (--model -> --other -> --model); requests, failures, and the time from each
   switch to the first answer of the new version and to the last answer of the old one. The
   server polls a JSON file the bench rewrites (the same swap path a registry alias change
   takes); with --promote-url it switches a running server through `POST /api/models/{v}/promote`.

    .venv/bin/python bench/serving.py --model models/vgg16 [--seconds 30] [--clients 32]
    .venv/bin/python bench/serving.py --model models/efficientnet_lite0 --only cache,overload
    .venv/bin/python bench/serving.py --only swap [--model models/vgg16 --other models/efficientnet_lite0]
    .venv/bin/python bench/serving.py --only swap --promote-url http://127.0.0.1:8000 --token T --versions 2,1

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from catdog.ml.artifacts import MODEL_GRAPHS
from catdog.ml.precision import describe_cpu_line
from catdog.web.model_source import ServedModel

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
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (a clean shutdown), then SIGKILL after 60 s."""
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


# --- 5. hot swap ------------------------------------------------------------------------------------------------
SwitchFn = Callable[[int, Path | None], None]  # switch(registry version, model dir or None): make it production


class FileSource:
    """A model source for the bench's own server: {"production": [registry version, model dir]} in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resolve(self) -> dict[str, ServedModel]:
        answer = json.loads(self.path.read_text())
        return {alias: ServedModel(alias, int(v), Path(d)) for alias, (v, d) in answer.items()}


def serve_from_file(source_file: Path, port: int) -> None:
    """The server half of the swap bench (a child process): the app, serving what the file names."""
    import uvicorn

    from catdog.settings import get_settings
    from catdog.web.app import create_app
    from catdog.web.state import app_state

    source = FileSource(source_file)
    first = source.resolve()["production"].model_dir
    app = create_app(get_settings(), first)
    app_state(app).model_source = source
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_config=None, access_log=False)


def write_source(path: Path, version: int, model: Path) -> None:
    path.with_suffix(".tmp").write_text(json.dumps({"production": [version, str(model.resolve())]}))
    path.with_suffix(".tmp").replace(path)  # atomic: the server never reads half a file


@contextmanager
def file_source_server(first: Path, **settings: object) -> Iterator[tuple[str, SwitchFn]]:
    """A server whose production model the bench switches; yields (base URL, switch(version, model dir))."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="catdog-bench-") as state:
        source = Path(state) / "source.json"
        write_source(source, 1, first)
        env = {**os.environ, "CATDOG_STATE_DIR": state, "CATDOG_LOG_LEVEL": "WARNING"}
        env |= {f"CATDOG_{key.upper()}": str(value) for key, value in settings.items()}
        command = [sys.executable, __file__, "--serve-from-file", str(source), "--port", str(port)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, process)
            yield base, lambda version, model: write_source(source, version, model or first)
        finally:
            stop(process)


def promote(base: str, token: str) -> SwitchFn:
    """switch(version, _) through the registry: POST /api/models/{version}/promote with the admin token."""

    def switch(version: int, _: Path | None = None) -> None:
        request = urllib.request.Request(
            f"{base}/api/models/{version}/promote", b"", {"Authorization": f"Bearer {token}"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    return switch


@dataclass
class Answered:
    sent: float  # time.monotonic() seconds
    done: float
    status: int
    registry_version: object


@dataclass
class SteadyLoad:
    """CLIENTS closed-loop clients with distinct bytes (nothing cached), recording every answer."""

    base: str
    photos: list[bytes]
    clients: int
    answers: list[Answered] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.counter = iter(range(10**9))
        self.threads = [threading.Thread(target=self.client) for _ in range(self.clients)]

    def client(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                i = next(self.counter)
            sent = time.monotonic()
            status, answer, _, _ = post(self.base, self.photos[i % len(self.photos)] + i.to_bytes(4, "big"), f"{i}.jpg")
            with self.lock:
                self.answers.append(Answered(sent, time.monotonic(), status, answer.get("registry_version")))

    def __enter__(self) -> SteadyLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def first_answer(self, version: int, after: float, timeout: float = 600) -> float | None:
        """When the first answer from `version` came after `after` (monotonic s), waiting for it; None: never."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                done = [a.done for a in self.answers if a.done >= after and a.registry_version == version]
            if done:
                return min(done)
            time.sleep(0.05)
        return None


def hot_swap(
    photos: list[bytes], clients: int, seconds: float, plan: list[tuple[int, Path | None]], switch: SwitchFn, base: str
) -> None:
    """Switch production along `plan` under steady load; print what each switch cost the clients."""
    rows = []
    with SteadyLoad(base, photos, clients) as load:
        time.sleep(min(10.0, seconds / 2))  # a steady state first
        for version, model in plan:
            flipped = time.monotonic()
            switch(version, model)
            first = load.first_answer(version, flipped)
            time.sleep(seconds)
            with load.lock:
                old = [
                    a.done
                    for a in load.answers
                    if a.done >= flipped and a.status == 200 and a.registry_version != version
                ]
            rows.append((version, model, first, max(old, default=flipped), flipped))
    failures = [a.status for a in load.answers if a.status != 200]
    print(f"requests {len(load.answers)}, failures {len(failures)} (statuses {sorted(set(failures))})")
    print("| switched to | first answer from it | last answer from the old one |")
    print("|---|---|---|")
    for version, model, first, last_old, flipped in rows:
        first_s = "never" if first is None else f"{first - flipped:.2f} s"
        print(f"| version {version} {model or ''} | {first_s} | {last_old - flipped:.2f} s |")


def swap_bench(args: argparse.Namespace, photos: list[bytes]) -> None:
    print(f"\n## Hot swap: {args.clients} clients, production switched twice, {args.seconds:.0f} s after each")
    if args.promote_url:
        versions = [int(v) for v in args.versions.split(",")]
        print(f"server {args.promote_url}, POST /api/models/{{v}}/promote to {versions}")
        hot_swap(
            photos,
            args.clients,
            args.seconds,
            [(v, None) for v in versions],
            promote(args.promote_url, args.token),
            args.promote_url,
        )
        return
    print(f"own server polling a source file every {args.poll:g} s: {args.model} (1) -> {args.other} (2) -> (1)")
    queue = max(64, 2 * args.clients)
    with file_source_server(args.model, registry_poll_seconds=args.poll, max_queue_size=queue) as (base, switch):
        plan: list[tuple[int, Path | None]] = [(2, args.other), (1, args.model)]
        hot_swap(photos, args.clients, args.seconds, plan, switch, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "vgg16")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder with cats/ and dogs/ photos")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument(
        "--only", default="gain,cache,overload,raw", help="comma-separated: gain,cache,overload,raw,swap"
    )
    parser.add_argument("--other", type=Path, default=ROOT / "models" / "efficientnet_lite0", help="swap: version 2")
    parser.add_argument("--poll", type=float, default=2.0, help="swap: the server's registry_poll_seconds")
    parser.add_argument("--promote-url", help="swap: switch this running server through its promote route")
    parser.add_argument("--token", default=os.environ.get("CATDOG_ADMIN_TOKEN", ""), help="swap: the admin token")
    parser.add_argument("--versions", default="2,1", help="swap with --promote-url: registry versions to promote")
    parser.add_argument("--serve-from-file", type=Path, help=argparse.SUPPRESS)  # the swap bench's server
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_from_file:
        serve_from_file(args.serve_from_file, args.port)
        return
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
    if "swap" in parts:
        swap_bench(args, photos)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
