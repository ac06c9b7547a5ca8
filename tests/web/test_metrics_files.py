"""Prometheus' multiprocess files on a disk that fills up: stock prometheus_client dies of SIGBUS, ours goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from .tinydisk import tiny_disk

# Counters on series past the first 64 KiB of the file (the file grows), and a gauge whose file
# is first made on the full disk; then space is freed and every series changes once more.
SCRIPT = textwrap.dedent(
    """
    import errno, os, sys
    if sys.argv[1] == "ours":
        from catdog.web.metrics_files import install
        install()
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    counter = Counter("t", "test counter", ["series"])
    counter.labels("first").inc()  # its file exists before the disk fills
    fd = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT)
    chunk = b"\\0" * 65536
    while chunk:
        try:
            os.write(fd, chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            chunk = chunk[: len(chunk) // 2]
    os.close(fd)
    names = [f"series-{i:05d}" for i in range(3000)]
    for name in names:
        counter.labels(name).inc()
    Gauge("g", "test gauge", multiprocess_mode="mostrecent").set(1.0)  # a new file on the full disk
    print("alive on a full disk", flush=True)
    os.unlink(os.path.join(folder, "filler"))
    for name in names:
        counter.labels(name).inc()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    text = generate_latest(registry).decode()
    print(sum(f'series="{name}"}} 2.0' in text for name in names), flush=True)
    """
)


def run(mode: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_full_disk_under_the_metrics_folder_kills_stock_prometheus_client_not_ours(tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "stock") as folder:
        stock = run("stock", folder)
    assert stock.returncode == -signal.SIGBUS, (stock.returncode, stock.stdout, stock.stderr[-2000:])
    with tiny_disk(tmp_path / "ours") as folder:
        ours = run("ours", folder)
    assert ours.returncode == 0, ours.stderr[-2000:]
    said = ours.stdout.splitlines()
    assert said[0] == "alive on a full disk"
    assert int(said[1]) == 3000  # after space came back, every series reached the file with its full count
