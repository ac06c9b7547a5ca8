"""Retraining end to end through the API: from POST /api/retrain to a registered model version.

Starts `catdog serve` (with its job worker) on 127.0.0.1 with a state folder of its own, uploads
N new photos (mirrored and cropped training photos: new content, so each costs backbone passes
as a user's new photo would, and none comes from the test split), starts a retrain and polls
/api/retrain-status every 0.5 s. Prints the time from the request to the registered version, the
job's own breakdown, the phases seen, and the CPU it ran on. The first retrain on a machine also
pays the backbone passes of the whole base set: run once with --warm-up to measure a warm cache
(the feature cache is shared, ~/.cache/catdog/features), or read both figures from one run.
--cold gives the server an empty feature cache of its own (a fresh machine): with --warm-up the
first figure is then the first retrain after `make run`; --wait-warm instead lets the idle
worker warm the cache first (catdog.jobs.warm) and prints how long that took.

    .venv/bin/python bench/retrain.py [--uploads 100] [--warm-up] [--cold] [--wait-warm] [--data DIR]
    .venv/bin/python bench/retrain.py --cold --warm-up --uploads 24    # the issue-20 targets

The server is stopped by its process id; the state folder is removed unless --keep.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from serving import free_port, wait_ready  # bench/ is the script's folder, so its sibling imports

from catdog.ml.precision import describe_cpu_line

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "catsdogs"
CATDOG = ROOT / ".venv" / "bin" / "catdog"
TOKEN = uuid.uuid4().hex


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=120) as response:
        return json.loads(response.read())


def new_photo(source: Path, rng: random.Random) -> bytes:
    """The photo mirrored and cropped by 2-12 px per side, saved anew as JPEG: new content, same label."""
    with Image.open(source) as opened:
        mirrored = ImageOps.mirror(opened.convert("RGB"))
    w, h = mirrored.size
    cut = rng.randint(2, 12)
    buffer = io.BytesIO()
    mirrored.crop((cut, cut, w - cut, h - cut)).save(buffer, "JPEG", quality=rng.randint(85, 95))
    return buffer.getvalue()


def new_photos(data: Path, n: int, seed: int) -> list[tuple[str, bytes]]:
    """(class folder, JPEG bytes): mirrored, slightly cropped training photos, half cats and half dogs."""
    rng = random.Random(seed)
    out = []
    for index in range(n):
        class_dir = ("cats", "dogs")[index % 2]
        source = rng.choice(sorted((data / "train" / class_dir).iterdir()))
        out.append((class_dir, new_photo(source, rng)))
    return out


def upload(base: str, photos: list[tuple[str, bytes]]) -> dict[str, int]:
    counts = {"uploaded": 0, "duplicates": 0, "errors": 0}
    for class_dir in ("cats", "dogs"):
        boundary = uuid.uuid4().hex
        body = b""
        for i, (kind, data) in enumerate(photos):
            if kind == class_dir:
                body += (
                    (
                        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="new{i}.jpg"\r\n'
                        "Content-Type: image/jpeg\r\n\r\n"
                    ).encode()
                    + data
                    + b"\r\n"
                )
        body += f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {TOKEN}"}
        answer = request(base, "POST", f"/api/upload-training-data?class_name={class_dir}", body, headers)
        counts["uploaded"] += answer["uploaded"]
        counts["duplicates"] += len(answer["duplicates"])
        counts["errors"] += len(answer["errors"])
    return counts


def retrain(base: str) -> dict[str, Any]:
    """Start a retrain and poll until it ends: the final status, seconds to the end, phases seen."""
    started = time.perf_counter()
    request(base, "POST", "/api/retrain", b"", {"Authorization": f"Bearer {TOKEN}"})
    phases: list[str] = []
    while True:
        status = request(base, "GET", "/api/retrain-status")
        detail = str(status.get("phase"))
        if not phases or phases[-1] != detail:
            phases.append(detail)
        if not status["is_retraining"]:
            return {"status": status, "seconds": time.perf_counter() - started, "phases": phases}
        time.sleep(0.5)


def wait_warm(base: str, limit_s: float = 3600) -> None:
    """Poll /api/retrain-status until the worker says the feature cache is ready; print the time."""
    started = time.perf_counter()
    last = ""
    while time.perf_counter() - started < limit_s:
        cache = request(base, "GET", "/api/retrain-status").get("feature_cache") or {}
        line = f"{cache.get('state')} {cache.get('done')}/{cache.get('total')}"
        if line != last and int(time.perf_counter() - started) % 60 < 5:
            print(f"  feature cache after {time.perf_counter() - started:.0f} s: {line}", flush=True)
            last = line
        if cache.get("state") in ("ready", "off", "error"):
            print(f"feature cache {cache.get('state')} after {time.perf_counter() - started:.1f} s: {cache}")
            return
        time.sleep(2)
    print(f"feature cache not ready after {limit_s:.0f} s")


def start_server(state: Path, data: Path, port: int, cold: bool = False) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "CATDOG_STATE_DIR": str(state),
        "CATDOG_DATA_DIR": str(data),
        "CATDOG_PORT": str(port),
        "CATDOG_ADMIN_TOKEN": TOKEN,
        "CATDOG_LOG_LEVEL": "WARNING",
    }
    if cold:  # an empty feature cache of its own: what a fresh machine has
        env["CATDOG_FEATURES_DIR"] = str(state / "features")
    return subprocess.Popen([str(CATDOG), "serve"], env=env, start_new_session=True)


def report(label: str, run: dict[str, Any]) -> None:
    status = run["status"]
    print(f"{label}: {status['status']} in {run['seconds']:.1f} s from the request to the end of the job")
    print(f"  version {status.get('version')}, gate {status.get('gate')}")
    print(f"  job breakdown (s): {status.get('seconds')}")
    print(f"  test metrics: {status.get('metrics')}")
    print(f"  phases seen: {' -> '.join(run['phases'])}")
    if status.get("error"):
        print(f"  error: {status['error']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DIR/{train,test}/{cats,dogs}")
    parser.add_argument("--uploads", type=int, default=100, help="new photos uploaded before the measured retrain")
    parser.add_argument("--warm-up", action="store_true", help="retrain once first (fills the feature cache)")
    parser.add_argument("--cold", action="store_true", help="an empty feature cache of the server's own")
    parser.add_argument("--wait-warm", action="store_true", help="let the idle worker warm the cache first")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the state folder")
    args = parser.parse_args()

    print(describe_cpu_line())
    state = Path(tempfile.mkdtemp(prefix="catdog-bench-retrain-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(state, args.data, port, args.cold)
    try:
        t0 = time.perf_counter()
        wait_ready(base, server)
        cache = "an empty" if args.cold else "the shared"
        print(f"server ready after {time.perf_counter() - t0:.1f} s with {cache} feature cache")
        if args.wait_warm:
            wait_warm(base)
        if args.warm_up:
            report("first retrain (base set only)" if args.cold else "warm-up retrain (base set only)", retrain(base))
        counts = upload(base, new_photos(args.data, args.uploads, args.seed))
        print(f"uploads: {counts}")
        run = retrain(base)
        report(f"retrain with {counts['uploaded']} new uploads", run)
        return 0 if run["status"]["status"] == "succeeded" else 1
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
