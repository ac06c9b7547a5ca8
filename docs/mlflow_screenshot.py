"""Screenshots of MLflow's own UI on catdog's store: the runs compared, and the registered model's versions.

Starts `mlflow ui` on 127.0.0.1 (a free port) over the state folder's store, drives Debian's
chromium with Playwright, writes docs/screenshots/mlflow-compare.png and mlflow-models.png, and
stops the UI's whole process group by its id.

    .venv/bin/python docs/mlflow_screenshot.py [--state state]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=ROOT / "state")
    args = parser.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow import MlflowClient

    uri = f"sqlite:///{args.state.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("catdog")
    if experiment is None:
        raise SystemExit(f"no catdog experiment in {uri}: start `make run` once")
    runs = client.search_runs([experiment.experiment_id], max_results=6)
    run_ids = [run.info.run_id for run in runs]
    port = free_port()
    ui = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "mlflow"),
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        compare = (
            f"{base}/#/compare-runs?runs={json.dumps(run_ids)}&experiments={json.dumps([experiment.experiment_id])}"
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(compare)
            page.wait_for_timeout(6000)
            close = page.get_by_role("button", name="Close")  # MLflow's assistant panel covers the table
            if close.count():
                close.first.click()
                page.wait_for_timeout(500)
            metrics = page.get_by_text("test_accuracy", exact=True)
            if metrics.count():
                metrics.first.scroll_into_view_if_needed()
                page.wait_for_timeout(500)
            page.screenshot(path=str(SHOTS / "mlflow-compare.png"), full_page=False)
            page.goto(f"{base}/#/models/catdog")
            page.wait_for_timeout(5000)
            page.screenshot(path=str(SHOTS / "mlflow-models.png"), full_page=False)
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)
    print(f"wrote {SHOTS / 'mlflow-compare.png'} and {SHOTS / 'mlflow-models.png'} ({len(run_ids)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
