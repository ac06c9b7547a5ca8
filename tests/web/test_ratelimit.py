"""Feedback through the API: the per-client rate limit, the proxy-aware client address, the counts on /monitoring."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from catdog.db.models import Feedback
from catdog.settings import Settings
from catdog.web.app import create_app
from catdog.web.ratelimit import RateLimit, feedback_limit
from catdog.web.state import app_state

from ..conftest import CATSDOGS
from .conftest import make_settings, wait_ready

PHOTOS = sorted((CATSDOGS / "train" / "cats").iterdir())[:3] + sorted((CATSDOGS / "train" / "dogs").iterdir())[:3]
LIMIT = 10
LOCAL = ("127.0.0.1", 40001)  # a trusted proxy by default (CATDOG_TRUSTED_PROXIES=127.0.0.1)
STRANGER = ("203.0.113.9", 40002)


@pytest.fixture
def app(lite0_model: Path, tmp_path: Path) -> Iterator[FastAPI]:
    """The app with its life cycle running (a first TestClient holds it) and a feedback limit of 10/minute."""
    settings = make_settings(tmp_path / "state", feedback_rate_limit=f"{LIMIT}/minute")
    application = create_app(settings, lite0_model, configure_logs=False)
    with TestClient(application) as client:
        wait_ready(client)
        yield application


def client_at(app: FastAPI, peer: tuple[str, int]) -> TestClient:
    """A client whose connection comes from `peer` (the app's life cycle is held by the fixture)."""
    return TestClient(app, client=peer)


def predict(client: TestClient, photo: Path) -> dict[str, Any]:
    response = client.post("/api/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def feedback(client: TestClient, answer: dict[str, Any], right: bool, **headers: str) -> Any:
    label = answer["predicted_class"] if right else ("cat" if answer["predicted_class"] == "dog" else "dog")
    return client.post(
        "/api/feedback", json={"prediction_id": answer["prediction_id"], "correct_label": label}, headers=headers
    )


def versions(client: TestClient) -> list[dict[str, Any]]:
    return list(client.get("/api/monitoring").json()["versions"])


def clients_of(app: FastAPI) -> list[str | None]:
    sessions = app_state(app).sessions
    assert sessions is not None
    with sessions() as session:
        return list(session.scalars(select(Feedback.client).order_by(Feedback.created_at)))


def test_a_flood_after_honest_feedback_is_limited_and_counts_one_picture(app: FastAPI) -> None:
    """trustcheck's scenario in small: honest verdicts on 5 pictures, then 40 wrong ones on one cached picture."""
    local = client_at(app, LOCAL)
    for photo in PHOTOS[:5]:
        assert feedback(local, predict(local, photo), right=True).status_code == 201
    flood = [predict(local, PHOTOS[5]) for _ in range(40)]
    assert len({a["prediction_id"] for a in flood}) == 40 and flood[-1]["cached"] is True
    codes = [feedback(local, answer, right=False).status_code for answer in flood]
    assert codes.count(201) == LIMIT - 5 and codes.count(429) == 40 - (LIMIT - 5)
    (row,) = versions(local)
    assert row["feedback"]["n"] == row["feedback"]["pictures"] == 6
    assert row["feedback"]["accuracy"] == pytest.approx(5 / 6, abs=1e-4)
    assert row["feedback"]["given"] == LIMIT and row["feedback"]["clients"] == 1
    assert set(clients_of(app)) == {"127.0.0.1"}


def test_past_the_limit_429_says_when_to_retry(app: FastAPI) -> None:
    local = client_at(app, LOCAL)
    answers = [predict(local, PHOTOS[0]) for _ in range(LIMIT + 1)]
    for answer in answers[:LIMIT]:
        assert feedback(local, answer, right=True).status_code == 201
    refused = feedback(local, answers[LIMIT], right=True)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert f"{LIMIT} per 1 minute" in refused.json()["detail"]
    # every request counts, unknown predictions too, and a refused one records nothing
    assert local.post("/api/feedback", json={"prediction_id": "f" * 32, "correct_label": "cat"}).status_code == 429
    assert len(clients_of(app)) == LIMIT
    assert feedback(client_at(app, STRANGER), answers[LIMIT], right=True).status_code == 201  # another client


def test_x_forwarded_for_is_believed_from_a_trusted_proxy_only(app: FastAPI) -> None:
    local, stranger = client_at(app, LOCAL), client_at(app, STRANGER)
    answers = [predict(local, PHOTOS[0]) for _ in range(2 * LIMIT + 4)]
    # through the trusted proxy: each forwarded address is a client of its own
    for answer in answers[:LIMIT]:
        assert feedback(local, answer, right=True, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 201
    assert feedback(local, answers[LIMIT], right=True, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    assert feedback(local, answers[LIMIT], right=True, **{"X-Forwarded-For": "198.51.100.8"}).status_code == 201
    # from anyone else the header is ignored: rotating it does not escape the limit
    codes = [
        feedback(stranger, answer, right=True, **{"X-Forwarded-For": f"192.0.2.{i}"}).status_code
        for i, answer in enumerate(answers[LIMIT + 1 : 2 * LIMIT + 2])
    ]
    assert codes == [201] * LIMIT + [429]
    assert clients_of(app) == ["198.51.100.7"] * LIMIT + ["198.51.100.8"] + ["203.0.113.9"] * LIMIT


def test_monitoring_says_from_how_many_pictures_and_clients(app: FastAPI) -> None:
    local = client_at(app, LOCAL)
    senders = ["198.51.100.1", "198.51.100.2", "198.51.100.1", "198.51.100.3"]
    for photo, sender in zip(PHOTOS[:3] + PHOTOS[:1], senders, strict=True):  # the 4th repeats the 1st picture
        given = feedback(local, predict(local, photo), right=True, **{"X-Forwarded-For": sender})
        assert given.status_code == 201
        assert given.json()["counted"] is (sender != "198.51.100.3")
    (row,) = versions(local)
    assert {k: row["feedback"][k] for k in ("n", "pictures", "clients", "given")} == {
        "n": 3,
        "pictures": 3,
        "clients": 2,
        "given": 4,
    }


def test_no_limit_when_the_setting_is_empty() -> None:
    unlimited = RateLimit("feedback", "")
    assert all(unlimited.retry_after("198.51.100.1") is None for _ in range(1000))
    limited = RateLimit("feedback", "2/second;3/hour")
    assert [limited.retry_after("a") for _ in range(2)] == [None, None]
    assert 1 <= (limited.retry_after("a") or 0) <= 1  # the per-second part refuses first
    assert limited.retry_after("b") is None  # per client


def _redis_reachable() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", 6379)) == 0


@pytest.mark.skipif(not _redis_reachable(), reason="no Redis on :6379")
def test_replicas_share_the_count_in_the_queues_redis() -> None:
    settings = Settings(queue_url="redis://127.0.0.1:6379/15", feedback_rate_limit="3/minute")
    replica_a, replica_b = feedback_limit(settings), feedback_limit(settings)
    client = f"198.51.100.{uuid.uuid4().hex}"  # a key of this run alone
    assert [replica_a.retry_after(client), replica_b.retry_after(client), replica_a.retry_after(client)] == [None] * 3
    assert 1 <= (replica_b.retry_after(client) or 0) <= 60


def test_an_unreachable_redis_lets_feedback_through() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limit = feedback_limit(Settings(queue_url=f"redis://127.0.0.1:{port}/0", feedback_rate_limit="1/minute"))
    assert [limit.retry_after("198.51.100.1") for _ in range(3)] == [None] * 3
