"""Peer benchmark: catdog's serving against BentoML serving the very same ONNX graph, on 127.0.0.1.

1. The graph: the model directory's graph that catdog picks on this CPU (catdog.ml.predictor.Predictor
   with catdog's settings: int8 or fp32, by CPU flags or a cached timing).
2. Graph only: that graph in this process through ONNX Runtime (catdog's session options and thread
   count), at batch sizes 1, 4, 8, 16 on images decoded beforehand (normalization included): P(dog)
   alone (`Predictor.p_dog`), and a whole `Predictor.infer` (what a server's batch thread runs: the
   graph's P(dog) and features and the pet gate): the ceilings a server can approach.
3. Servers, one at a time, alternated (catdog, BentoML, catdog, BentoML for --rounds 2):
   - catdog: `.venv/bin/catdog serve --model MODEL` with its defaults on a free port, a temporary
     CATDOG_STATE_DIR, and an empty temporary CATDOG_DATA_DIR (its job worker's feature warmer then
     has nothing to fill, so no backbone pass competes with serving); ready when GET /ready is 200;
   - BentoML: `bentoml serve` of bench/peers_bentoml_service.py in a virtual environment of its own
     (BENTOML_VERSION from PyPI, onnxruntime, numpy, pillow, pillow_heif, tqdm at requirements.lock's
     versions, never torch or a CUDA package: a `pip install --dry-run` report is checked first),
     one worker, adaptive batching (max batch 16), the same per-image work through catdog's own
     Predictor (decode, the same graph at the same precision and thread count, the pet gate); ready
     when GET /readyz is 200.
   Each is loaded by the same load generator (aiohttp in this process, keep-alive): CLIENTS
   closed-loop clients, POST of a multipart `file`, each request with JPEG bytes of its own (a test
   photo with a JPEG comment segment naming the request: same pixels, no cache answers; all bodies
   are built before the timed window), --warmup seconds not counted, then --seconds measured; then 1
   client the same way for --single-seconds. Every answer's latency and status is kept; errors are
   non-200 answers and exceptions. Before the load, a few probe photos are sent one by one: the
   largest P(dog) difference between the servers is printed (it should be ~1e-6).
4. Figures: per run req/s, p50/p95/p99 at CLIENTS clients, errors, p50 at 1 client; catdog/BentoML
   ratios of throughput and p95 (median over runs, min-max over every pairing of a catdog run with a
   BentoML run); served / graph-only throughput (the target: >= 0.9x); the CPU, versions and graph.

    .venv/bin/python bench/peers.py [--model models/vgg16] [--seconds 30] [--warmup 5] [--single-seconds 15]
        [--clients 32] [--rounds 2] [--graph-seconds 10] [--json OUT] [--logs DIR]
    .venv/bin/python bench/peers.py --seconds 5 --warmup 2 --single-seconds 3 --rounds 1 --graph-seconds 2

Traffic goes to 127.0.0.1 only; each phase is bounded in time and in requests (the prepared bodies);
every server is started in a process group of its own and stopped by its process id (SIGTERM, then
SIGKILL of its group after STOP_TIMEOUT_S), also on Ctrl-C, SIGTERM or an error (try/finally, atexit).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import gc
import itertools
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnxruntime as ort
from serving import free_port  # bench/ is the script's folder, so its sibling imports

import catdog
from catdog.ml.precision import cpu_description, cpu_flags, describe_cpu_line
from catdog.ml.predictor import Predictor
from catdog.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "catsdogs" / "test"
CATDOG = ROOT / ".venv" / "bin" / "catdog"
LOCK = ROOT / "requirements.lock"
SERVICE = "peers_bentoml_service:PeerService"  # bench/peers_bentoml_service.py
BENTOML_VERSION = "1.4.40"  # the current PyPI release when this bench was written; --bentoml-version overrides
PEER_LOCKED = ("onnxruntime", "numpy", "pillow", "pillow_heif", "tqdm")  # requirements.lock's versions
# Never in the peer venv: PyTorch and anything CUDA. nvidia-ml-py (BentoML's GPU query, pure-Python
# NVML bindings over ctypes, no CUDA library in it) is a hard requirement of bentoml and is allowed.
FORBIDDEN = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-|cuda|cupy|tensorrt|onnxruntime-gpu|jax)")
ALLOWED = frozenset({"nvidia-ml-py"})
BATCH_SIZES = (1, 4, 8, 16)
MAX_BATCH = 16
PROBES = 4  # photos sent one by one to each server before the load; their P(dog) must agree
STOP_TIMEOUT_S = 30.0
MAX_POOL_BYTES = 768 * 1024 * 1024  # prepared request bodies of one phase, at most
BOUNDARY = "catdogpeers" + secrets.token_hex(8)
NONCE = secrets.token_hex(4)  # this run's mark in every JPEG comment: no two requests ever alike

_RUNNING: dict[int, subprocess.Popen[bytes]] = {}  # process id -> server process still to stop


# --- the peer virtual environment -------------------------------------------------------------------------
def locked_versions(names: tuple[str, ...]) -> dict[str, str]:
    """{name: version} from requirements.lock for these packages (names compared as pip does)."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted = {norm(n): n for n in names}
    found: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and norm(name) in wanted:
            found[wanted[norm(name)]] = version.split(";")[0].strip()
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"requirements.lock pins no {', '.join(sorted(missing))}")
    return found


def forbidden(names: list[str]) -> list[str]:
    """The package names that must never enter the peer venv (torch, CUDA)."""
    return sorted(n for n in names if FORBIDDEN.match(n.lower()) and n.lower() not in ALLOWED)


def ensure_peer_venv(venv: Path, bentoml_version: str) -> dict[str, str]:
    """Create (or reuse) the BentoML venv; returns {package: version} of what runs there.

    Installs bentoml==bentoml_version and PEER_LOCKED at requirements.lock's versions with pip, after
    a `pip install --dry-run --report` that must list no torch or CUDA package (SystemExit if it does).
    A stamp file in the venv names the requirements it holds; the same requirements reuse it as is.
    """
    requirements = [f"bentoml=={bentoml_version}"] + [f"{n}=={v}" for n, v in locked_versions(PEER_LOCKED).items()]
    python = venv / "bin" / "python"
    stamp = venv / "catdog-peers.json"
    try:
        ready = json.loads(stamp.read_text()).get("requirements") == requirements and python.is_file()
    except (OSError, ValueError):
        ready = False
    if not ready:
        print(f"peer venv: installing {' '.join(requirements)} into {venv}", flush=True)
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        with tempfile.TemporaryDirectory(prefix="catdog-peers-") as tmp:
            report = Path(tmp) / "report.json"
            subprocess.run([*pip, "--dry-run", "--report", str(report), *requirements], check=True)
            planned = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
        bad = forbidden(planned)
        if bad:
            raise SystemExit(f"peer venv: pip would install {', '.join(bad)}; refusing (no torch or CUDA there)")
        subprocess.run([*pip, *requirements], check=True)
    installed = _installed(python)
    bad = forbidden(list(installed))
    if bad:
        raise SystemExit(f"peer venv {venv} holds {', '.join(bad)}: remove it and run again")
    if not ready:
        stamp.write_text(json.dumps({"requirements": requirements}, indent=2))
    return installed


def _installed(python: Path) -> dict[str, str]:
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {re.sub(r"[-_.]+", "-", item["name"]).lower(): item["version"] for item in json.loads(listing)}


# --- the graph and graph-only throughput --------------------------------------------------------------------
@dataclass
class Graph:
    model_dir: Path
    path: Path  # the .onnx both servers run
    precision: str
    gate: str | None  # catdog's pet gate: "features" (from the graph's features), "imagenet" (a graph), None
    threads: int  # ONNX Runtime intra-op threads (0: its default, every core)
    decode_threads: int


@dataclass
class GraphOnly:
    batch: int
    graph: float  # images/s, Predictor.p_dog: the graph, P(dog) only
    infer: float  # images/s, Predictor.infer: the graph's P(dog) and features, then the pet gate


def pick_graph(model_dir: Path) -> tuple[Graph, Predictor]:
    """What catdog serves for model_dir on this CPU, through catdog's own Predictor and settings."""
    settings = get_settings()
    predictor = Predictor(model_dir, threads=settings.threads, precision=settings.precision)
    gate = getattr(predictor, "pet_gate", None) or ("imagenet" if predictor.gate is not None else None)
    graph = Graph(
        model_dir.resolve(),
        predictor.model_path.resolve(),
        predictor.precision,
        gate,
        settings.threads,
        settings.decode_threads,
    )
    return graph, predictor


def graph_only(predictor: Predictor, photos: list[bytes], seconds: float) -> list[GraphOnly]:
    """images/s of Predictor.p_dog and Predictor.infer per batch size, images decoded beforehand."""
    decoded = [predictor.decode(p) for p in photos[:MAX_BATCH]]
    images = np.stack([image for image, _ in decoded])
    gates = None if decoded[0][1] is None else np.stack([g for _, g in decoded if g is not None])
    rows = []
    for n in BATCH_SIZES:
        x, g = images[:n], None if gates is None else gates[:n]

        def graph(x: np.ndarray = x) -> None:
            predictor.p_dog(x)

        def infer(x: np.ndarray = x, g: np.ndarray | None = g) -> None:
            predictor.infer(x, g)

        rows.append(GraphOnly(n, _images_per_s(graph, n, seconds), _images_per_s(infer, n, seconds)))
        print(f"  ... graph only, batch {n}: done", flush=True)
    return rows


def _images_per_s(run: Callable[[], None], n: int, seconds: float) -> float:
    run()  # warm-up: first-run allocations, kernel choice
    runs, started = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - started < seconds:
        run()
        runs += 1
    return n * runs / (time.perf_counter() - started)


# --- request bodies -------------------------------------------------------------------------------------------
def with_comment(jpeg: bytes, text: str) -> bytes:
    """The JPEG with a COM segment right after its start marker: other bytes, the same pixels."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def multipart(data: bytes, filename: str) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def bodies(photos: list[bytes], count: int, tag: str) -> list[bytes]:
    """count multipart bodies, each a photo (in turn) with a comment of its own."""
    return [
        multipart(with_comment(photos[i % len(photos)], f"{NONCE} {tag} {i}"), f"{tag}-{i}.jpg") for i in range(count)
    ]


def pool_size(photos: list[bytes], rate_bound: float, seconds: float, clients: int) -> int:
    """Bodies for a phase: 3x the graph-only rate over its length, plus slack, within MAX_POOL_BYTES."""
    wanted = math.ceil(3 * rate_bound * seconds) + 4 * clients + 16
    mean_bytes = statistics.fmean(len(p) for p in photos) + 512
    return max(clients, min(wanted, int(MAX_POOL_BYTES / mean_bytes)))


# --- load -------------------------------------------------------------------------------------------------------
@dataclass
class Load:
    clients: int
    seconds: float  # the measured window
    requests_per_s: float  # 200 answers completed in the window / its length
    # clients / mean latency (Little's law for a closed loop without think time): the same figure, without
    # the window's quantization (answers come in bursts of a batch: a window holds k or k+1 of them)
    little_requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ok: int
    errors: int  # non-200 answers and exceptions completed in the window
    errors_total: int  # the same over the whole phase (warm-up and drain included)
    statuses: dict[str, int]  # every non-200 status over the phase ("0": an exception)
    ran_out: bool  # the prepared bodies ran out before the window ended (figures then undercount)


async def _closed_loop(
    url: str, payloads: list[bytes], clients: int, until: float, timeout: float
) -> tuple[list[tuple[float, float, int]], bool]:
    """Each client posts the next body as soon as its answer came; (start, end, status) per request."""
    samples: list[tuple[float, float, int]] = []
    counter = itertools.count()
    ran_out = False
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    connector = aiohttp.TCPConnector(limit=clients)  # keep-alive: one connection per client, reused
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def client() -> None:
            nonlocal ran_out
            while time.perf_counter() < until:
                i = next(counter)
                if i >= len(payloads):
                    ran_out = True
                    return
                started = time.perf_counter()
                try:
                    async with session.post(url, data=payloads[i], headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError, OSError):
                    status = 0
                samples.append((started, time.perf_counter(), status))

        await asyncio.gather(*(client() for _ in range(clients)))
    return samples, ran_out


def load(url: str, payloads: list[bytes], clients: int, warmup: float, seconds: float, timeout: float) -> Load:
    """warmup seconds of load, then `seconds` measured (answers completed inside the window)."""
    begin = time.perf_counter()
    window = (begin + warmup, begin + warmup + seconds)
    samples, ran_out = asyncio.run(_closed_loop(url, payloads, clients, window[1], timeout))
    inside = [(s, e, status) for s, e, status in samples if window[0] <= e <= window[1]]
    latencies = np.array([(e - s) * 1000 for s, e, status in inside if status == 200])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else (math.nan,) * 3
    statuses: dict[str, int] = {}
    for _, _, status in samples:
        if status != 200:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    return Load(
        clients,
        seconds,
        len(latencies) / seconds,
        clients * 1000 / float(latencies.mean()) if len(latencies) else math.nan,
        float(p50),
        float(p95),
        float(p99),
        len(latencies),
        len(inside) - len(latencies),
        sum(statuses.values()),
        statuses,
        ran_out,
    )


# --- servers ----------------------------------------------------------------------------------------------------
def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A server in a process group of its own (its group id is its pid), output to `log`.

    On Linux it also gets SIGTERM if this process dies without running its cleanup (SIGKILL).
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_term_with_parent if _PRCTL is not None else None,
        )
    _RUNNING[process.pid] = process
    return process


def _libc_prctl() -> Any:
    """libc's prctl, looked up in this process (the forked child then loads nothing); None off Linux."""
    try:
        return ctypes.CDLL(None).prctl if sys.platform == "linux" else None
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def _term_with_parent() -> None:
    """In the child before exec: prctl(PR_SET_PDEATHSIG, SIGTERM)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the server's pid; SIGKILL to its process group when it or a child outlives `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    while time.monotonic() < deadline and _group_alive(process.pid):  # its children (job worker, BentoML worker)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    _RUNNING.pop(process.pid, None)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_all() -> None:
    for process in list(_RUNNING.values()):
        stop(process, timeout=5)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> float:
    """Seconds until GET url answered 200; RuntimeError (with the log's tail) if the server exits or never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n" + "\n".join(tail))
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:  # HTTPError: OSError
            if response.status == 200:
                return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s (log: {log})")


def served_precision(base: str) -> str | None:
    """The precision catdog's GET /api/status says it runs; None when it does not say."""
    try:
        with urllib.request.urlopen(base + "/api/status", timeout=30) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return answer.get("precision") if isinstance(answer, dict) else None


def post_probe(url: str, body: bytes, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"probe: {url} answered {exc.code}: {exc.read()[:500]!r}") from None
    return answer[0] if isinstance(answer, list) else answer  # BentoML answers a list of one


@dataclass
class Server:
    name: str  # "catdog" or "bentoml"
    port: int
    command: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    p_dog_key: str  # the answer's P(dog) field


def catdog_server(graph: Graph, port: int, tmp: Path) -> Server:
    (tmp / "state").mkdir()
    (tmp / "data").mkdir()  # empty: the job worker's feature warmer has nothing to fill during the timing
    env = {
        **os.environ,
        "CATDOG_HOST": "127.0.0.1",
        "CATDOG_PORT": str(port),
        "CATDOG_STATE_DIR": str(tmp / "state"),
        "CATDOG_DATA_DIR": str(tmp / "data"),
        "CATDOG_ADMIN_TOKEN": secrets.token_urlsafe(24),
    }
    command = [str(CATDOG), "serve", "--model", str(graph.model_dir), "--host", "127.0.0.1", "--port", str(port)]
    return Server("catdog", port, command, env, "/ready", "/api/predict", "probability")


def bentoml_server(graph: Graph, venv: Path, port: int, tmp: Path, max_latency_ms: int) -> Server:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env |= {
        "BENTOML_HOME": str(tmp / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PEERS_GRAPH": str(graph.path),
        "PEERS_MODEL_DIR": str(graph.model_dir),
        "PEERS_PRECISION": graph.precision,
        "PEERS_THREADS": str(graph.threads),
        "PEERS_DECODE_THREADS": str(graph.decode_threads),
        "PEERS_MAX_BATCH": str(MAX_BATCH),
        "PEERS_MAX_LATENCY_MS": str(max_latency_ms),
        "PEERS_TIMEOUT_S": str(math.ceil(max_latency_ms / 1000) + 60),
    }
    command = [str(venv / "bin" / "bentoml"), "serve", SERVICE, "--working-dir", str(BENCH)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    return Server("bentoml", port, command, env, "/readyz", "/predict", "p_dog")


@contextlib.contextmanager
def running(server: Server, tmp: Path, ready_timeout: float) -> Iterator[tuple[str, float]]:
    """Start the server, yield (base URL, seconds to ready), stop it by its pid whatever happens."""
    base = f"http://127.0.0.1:{server.port}"
    log = tmp / f"{server.name}.log"
    process = start(server.command, server.env, log)
    try:
        yield base, wait_ready(base + server.ready_path, process, log, ready_timeout)
    except Exception:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"{server.name}'s log ends:\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        stop(process)


@dataclass
class Run:
    round: int
    server: str
    ready_s: float
    loaded: Load  # CLIENTS clients
    single: Load  # 1 client
    probes: list[float]  # P(dog) of the probe photos
    precision: str | None = None  # what the server says it runs (catdog's /api/status)
    notes: list[str] = field(default_factory=list)


def run_server(
    server: Server, tmp: Path, round_: int, photos: list[bytes], args: argparse.Namespace, rate_bound: float
) -> Run:
    timeout = args.request_timeout
    with running(server, tmp, args.ready_timeout) as (base, ready_s):
        print(f"  ... round {round_}, {server.name}: ready after {ready_s:.1f} s", flush=True)
        url = base + server.predict_path
        tag = f"r{round_}-{server.name}"
        probes = []
        for i, photo in enumerate(photos[:PROBES]):
            answer = post_probe(url, multipart(with_comment(photo, f"{NONCE} {tag} probe {i}"), "p.jpg"), timeout)
            probes.append(float(answer[server.p_dog_key]))
        precision = served_precision(base) if server.name == "catdog" else None
        count = pool_size(photos, rate_bound, args.warmup + args.seconds, args.clients)
        loaded = load(url, bodies(photos, count, tag + "-load"), args.clients, args.warmup, args.seconds, timeout)
        count = pool_size(photos, rate_bound, args.warmup + args.single_seconds, 1)
        single = load(url, bodies(photos, count, tag + "-single"), 1, args.warmup, args.single_seconds, timeout)
    notes = [f"{what}: the prepared bodies ran out" for what, r in (("load", loaded), ("single", single)) if r.ran_out]
    notes += [f"non-200 answers over the phases: {r.statuses}" for r in (loaded, single) if r.errors_total]
    return Run(round_, server.name, ready_s, loaded, single, probes, precision, notes)


# --- report -------------------------------------------------------------------------------------------------------
def spread(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    return f"{min(finite):.2f}-{max(finite):.2f}x" if finite else "n/a"


def ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def summarize(runs: list[Run], best_graph: float, best_infer: float) -> dict[str, Any]:
    by = {name: [r for r in runs if r.server == name] for name in ("catdog", "bentoml")}
    thr = {name: [r.loaded.requests_per_s for r in rs] for name, rs in by.items()}
    little = {name: [r.loaded.little_requests_per_s for r in rs] for name, rs in by.items()}
    p95 = {name: [r.loaded.p95_ms for r in rs] for name, rs in by.items()}
    pairs = list(itertools.product(range(len(by["catdog"])), range(len(by["bentoml"]))))
    summary: dict[str, Any] = {
        "throughput_ratio": ratio(statistics.median(thr["catdog"]), statistics.median(thr["bentoml"])),
        "throughput_ratio_pairings": [ratio(thr["catdog"][i], thr["bentoml"][j]) for i, j in pairs],
        "little_throughput_ratio": ratio(statistics.median(little["catdog"]), statistics.median(little["bentoml"])),
        "little_throughput_ratio_pairings": [ratio(little["catdog"][i], little["bentoml"][j]) for i, j in pairs],
        "p95_ratio": ratio(statistics.median(p95["catdog"]), statistics.median(p95["bentoml"])),
        "p95_ratio_pairings": [ratio(p95["catdog"][i], p95["bentoml"][j]) for i, j in pairs],
        "served_over_graph_only": {n: [ratio(t, best_graph) for t in thr[n]] for n in by},
    }
    summary["served_over_infer"] = {n: [ratio(t, best_infer) for t in thr[n]] for n in by}
    probes = np.array([r.probes for r in runs])
    summary["probe_p_dog_max_difference"] = float(np.ptp(probes, axis=0).max()) if probes.size else math.nan
    return summary


def print_report(
    graph: Graph, rows: list[GraphOnly], runs: list[Run], summary: dict[str, Any], args: argparse.Namespace
) -> None:
    best = max(rows, key=lambda r: r.graph)
    best_infer = max(rows, key=lambda r: r.infer)
    print(f"\n## Graph only: {graph.path} ({graph.precision}), ONNX Runtime in this process, images decoded beforehand")
    print(f"| batch | graph (P(dog)) images/s | Predictor.infer (graph + pet gate: {graph.gate}) images/s |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row.batch} | {row.graph:.2f} | {row.infer:.2f} |")
    print(f"best: graph {best.graph:.2f} images/s (batch {best.batch}), ", end="")
    print(f"infer {best_infer.infer:.2f} images/s (batch {best_infer.batch})")

    print(
        f"\n## Served: {args.clients} clients ({args.warmup:g} s warm-up, {args.seconds:g} s measured), "
        f"then 1 client ({args.single_seconds:g} s)"
    )
    print(
        f"| round | server | ready s | req/s | {args.clients}/mean latency | p50 ms | p95 ms | p99 ms | answers | "
        "errors | 1 client p50 ms | 1 client req/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        a, s = r.loaded, r.single
        print(
            f"| {r.round} | {r.server} | {r.ready_s:.1f} | {a.requests_per_s:.2f} | {a.little_requests_per_s:.2f} | "
            f"{a.p50_ms:.0f} | {a.p95_ms:.0f} | "
            f"{a.p99_ms:.0f} | {a.ok} | {a.errors} | {s.p50_ms:.0f} | {s.requests_per_s:.2f} |"
        )
    for r in runs:
        for note in r.notes:
            print(f"note: round {r.round} {r.server}: {note}")

    print("\n## catdog / BentoML")
    t, p = summary["throughput_ratio_pairings"], summary["p95_ratio_pairings"]
    print(
        f"throughput: {summary['throughput_ratio']:.2f}x (medians of the runs), "
        f"{spread(t)} over the {len(t)} pairings (> 1: catdog serves more)"
    )
    lt = summary["little_throughput_ratio_pairings"]
    print(
        f"throughput as {args.clients}/mean latency: {summary['little_throughput_ratio']:.2f}x, "
        f"{spread(lt)} over the {len(lt)} pairings"
    )
    print(
        f"p95 latency: {summary['p95_ratio']:.2f}x, {spread(p)} over the {len(p)} pairings (< 1: catdog answers faster)"
    )
    for name, values in summary["served_over_graph_only"].items():
        line = f"served / graph only ({best.graph:.2f} images/s): {name} {spread(values)} (target >= 0.9x)"
        line += f"; / Predictor.infer ({best_infer.infer:.2f} images/s): {spread(summary['served_over_infer'][name])}"
        print(line)
    print(f"same answers: the probe photos' P(dog) differ by at most {summary['probe_p_dog_max_difference']:.2e}")


def machine(peer: dict[str, str]) -> dict[str, Any]:
    cpu = cpu_description()
    return {
        "cpu": cpu["model"],
        "architecture": cpu["architecture"],
        "logical_cores": cpu["logical_cores"],
        "physical_cores": _physical_cores(),
        "flags": cpu["flags"] + sorted(f for f in cpu_flags() if f.startswith("amx") and f not in cpu["flags"]),
        "int8_dot_product": cpu["int8_dot_product"],
        "python": platform.python_version(),
        "catdog": catdog.__version__,
        "onnxruntime": ort.__version__,
        "peer": {k: peer.get(k, "?") for k in ("bentoml", "onnxruntime", "numpy", "pillow", "pillow-heif")},
    }


def _physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it does not say."""
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        return None
    cores = set()
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores) or None


def _finite(value: Any) -> Any:
    """NaN and infinities as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --- main -------------------------------------------------------------------------------------------------------
def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: every server is stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "vgg16", help="model directory")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder with cats/ and dogs/ JPEG photos")
    parser.add_argument("--clients", type=int, default=32, help="closed-loop clients of the loaded phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window with CLIENTS clients")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before each measured window, not counted")
    parser.add_argument("--single-seconds", type=float, default=15.0, help="measured window with 1 client")
    parser.add_argument("--rounds", type=int, default=2, help="catdog then BentoML, this many times")
    parser.add_argument("--graph-seconds", type=float, default=10.0, help="graph-only timing per batch size")
    parser.add_argument("--max-latency-ms", type=int, default=None, help="BentoML's (default: from graph only)")
    parser.add_argument("--bentoml-version", default=BENTOML_VERSION)
    parser.add_argument("--venv", type=Path, default=None, help="peer venv (default CATDOG_CACHE_DIR/peers-venv)")
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="seconds a server may take to be ready")
    parser.add_argument("--request-timeout", type=float, default=None, help="seconds per request (default: derived)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--logs", type=Path, default=None, help="keep each server's output in this folder")
    args = parser.parse_args()
    if min(args.clients, args.rounds) < 1 or min(args.seconds, args.single_seconds) <= 0 or args.warmup < 0:
        parser.error("--clients and --rounds must be >= 1, --seconds and --single-seconds > 0, --warmup >= 0")
    signal.signal(signal.SIGTERM, _terminate)
    atexit.register(stop_all)

    venv = args.venv or get_settings().cache_dir / "peers-venv"
    peer = ensure_peer_venv(venv, args.bentoml_version)
    files = sorted(
        p for c in ("cats", "dogs") for p in (args.data / c).iterdir() if p.suffix.lower() in (".jpg", ".jpeg")
    )
    random.Random(1).shuffle(files)  # serving.py's draw: both classes, the same photos every run
    photos = [b for b in (p.read_bytes() for p in files[:400]) if b[:2] == b"\xff\xd8"][:200]  # COM needs JPEG
    if len(photos) < MAX_BATCH:
        raise SystemExit(f"need at least {MAX_BATCH} JPEG photos under {args.data}/cats and /dogs")

    graph, predictor = pick_graph(args.model)
    facts = machine(peer)
    print(f"CPU: {describe_cpu_line()}")
    print(
        f"  flags {', '.join(facts['flags']) or 'none'}; "
        f"{facts['logical_cores']} logical cores, {facts['physical_cores']} physical"
    )
    print(
        f"versions: catdog {facts['catdog']}, onnxruntime {facts['onnxruntime']} (catdog's .venv) and "
        f"{facts['peer']['onnxruntime']} (BentoML's venv, {venv}), bentoml {facts['peer']['bentoml']}, "
        f"python {facts['python']}"
    )
    print(
        f"graph: {graph.path} ({graph.precision}, what catdog's Predictor picks here); pet gate: {graph.gate or 'none'}"
    )
    threads = graph.threads or "0 (ONNX Runtime's default: every core)"
    print(f"threads: ONNX Runtime intra-op {threads}, decode {graph.decode_threads}; max batch {MAX_BATCH} both")
    rows = graph_only(predictor, photos, args.graph_seconds)
    del predictor
    gc.collect()  # its sessions (and their thread pools) go before any server starts

    best = max(r.graph for r in rows)
    slowest = min(rows[0].graph, rows[0].infer)  # batch 1
    # BentoML sheds (503) a request whose wait plus estimated run time passes max_latency_ms: far enough
    # that CLIENTS closed-loop clients never are, even one image per run.
    max_latency_ms = args.max_latency_ms or max(10_000, min(600_000, math.ceil(3000 * args.clients / slowest)))
    args.request_timeout = args.request_timeout or max_latency_ms / 1000 + 120
    print(
        f"BentoML: max_latency_ms {max_latency_ms}, 1 worker, threads=1; request timeout {args.request_timeout:.0f} s"
    )

    runs: list[Run] = []
    try:
        for round_ in range(1, args.rounds + 1):
            for name in ("catdog", "bentoml"):
                with tempfile.TemporaryDirectory(prefix=f"catdog-peers-{name}-") as tmp_dir:
                    tmp = Path(tmp_dir)
                    port = free_port()
                    server = (
                        catdog_server(graph, port, tmp)
                        if name == "catdog"
                        else bentoml_server(graph, venv, port, tmp, max_latency_ms)
                    )
                    try:
                        runs.append(run_server(server, tmp, round_, photos, args, best))
                    finally:
                        if args.logs:
                            args.logs.mkdir(parents=True, exist_ok=True)
                            log = tmp / f"{name}.log"
                            if log.is_file():
                                shutil.copyfile(log, args.logs / f"round{round_}-{name}.log")
    finally:
        stop_all()
    for r in runs:
        if r.precision is not None and r.precision != graph.precision:
            r.notes.append(f"catdog serves {r.precision}, not {graph.precision}: the graphs differ")

    summary = summarize(runs, best, max(r.infer for r in rows))
    print_report(graph, rows, runs, summary, args)
    if args.json:
        figures = {
            "machine": facts,
            "graph": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(graph).items()},
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "bentoml_max_latency_ms": max_latency_ms,
            "graph_only": [asdict(r) for r in rows],
            "runs": [asdict(r) for r in runs],
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(figures), indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        print("\ninterrupted: every server this bench started is stopped", file=sys.stderr)
        sys.exit(130)
