"""The web app under test: the tiny Lite0 model, a state folder of its own, SQLite or PostgreSQL."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from catdog.settings import Settings
from catdog.web.app import create_app

from ..conftest import CATSDOGS


def wait_ready(client: TestClient, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return
        if response.json().get("phase") == "failed":
            raise RuntimeError(response.json())
        time.sleep(0.1)
    raise TimeoutError("the app never got ready")


def make_settings(state_dir: Path, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "state_dir": state_dir,
        "data_dir": CATSDOGS,
        "max_batch_size": 4,
        "max_queue_size": 16,
        "max_batch_files": 16,
        "warmup_batch_sizes": "1,4",
        "db_flush_seconds": 0.05,
        "drift_interval_seconds": 3600,
        "log_format": "text",
        **overrides,
    }
    return Settings(**options)


@pytest.fixture
def app_client(lite0_model: Path, tmp_path: Path) -> Iterator[TestClient]:
    """A running app (lifespan included) serving the tiny Lite0 model, ready to answer."""
    settings = make_settings(tmp_path / "state")
    with TestClient(create_app(settings, lite0_model, configure_logs=False)) as client:
        wait_ready(client)
        yield client


def jpeg_bytes(path: Path) -> bytes:
    return path.read_bytes()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
