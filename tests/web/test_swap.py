"""Hot swap of the served model and the A/B split, driven by a model source the test changes."""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from catdog.ml.predictor import model_version
from catdog.web import model_control as control_module
from catdog.web.app import create_app
from catdog.web.model_source import PinnedSource, RegistrySource, ServedModel
from catdog.web.service import ModelService
from catdog.web.state import app_state

from ..conftest import CATSDOGS
from .conftest import make_settings, wait_ready

PHOTOS = [p.read_bytes() for p in sorted((CATSDOGS / "test").glob("*/*.jpg"))]


class FakeSource:
    """A model source whose answer the test sets: set(production=(1, dir), staging=(2, dir))."""

    def __init__(self, **aliases: tuple[int, Path]) -> None:
        self.set(**aliases)

    def set(self, **aliases: tuple[int, Path]) -> None:
        self.answer = {alias: ServedModel(alias, v, d) for alias, (v, d) in aliases.items()}

    def resolve(self) -> dict[str, ServedModel]:
        return dict(self.answer)


@dataclass
class Versions:
    v1: Path
    v2: Path  # the same graph, head.npz changed slightly: another content id
    broken: Path  # v1 with a graph ONNX Runtime cannot read

    def content_id(self, path: Path) -> str:
        return model_version(path, "efficientnet_lite0")


@pytest.fixture(scope="module")
def versions(lite0_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    root = tmp_path_factory.mktemp("versions")
    v1 = Path(shutil.copytree(lite0_model, root / "v1"))
    v2 = Path(shutil.copytree(lite0_model, root / "v2"))
    head = dict(np.load(v2 / "head.npz"))
    head["linear2.bias"] = head["linear2.bias"] + np.float32(1e-3)
    np.savez(v2 / "head.npz", **head)
    broken = Path(shutil.copytree(lite0_model, root / "broken"))
    (broken / "model.onnx").write_bytes(b"not an ONNX graph")
    found = Versions(v1, v2, broken)
    assert found.content_id(v1) != found.content_id(v2)
    return found


@contextmanager
def serving(source: FakeSource, state: Path, **overrides: Any) -> Iterator[TestClient]:
    """The app serving what `source` says, polling it every 0.1 s, ready to answer."""
    settings = make_settings(state, registry_poll_seconds=0.1, **overrides)
    app = create_app(settings, source.answer["production"].model_dir, configure_logs=False)
    app_state(app).model_source = source  # what serves, instead of the directory alone
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def service_of(client: TestClient) -> ModelService:
    service = app_state(client.app).service  # type: ignore[arg-type]
    assert service is not None
    return service


def post(client: TestClient, data: bytes) -> Any:
    return client.post("/api/predict", files={"file": ("photo.jpg", data, "image/jpeg")})


def distinct(i: int) -> bytes:
    """Photo i with bytes after its end marker: the same picture, a new content hash (never cached)."""
    return PHOTOS[i % len(PHOTOS)] + i.to_bytes(4, "big")


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition never held")
        time.sleep(0.02)


def serves(service: ModelService, alias: str, version: int | None) -> Callable[[], bool]:
    def check() -> bool:
        served = service.served()[alias]
        return (served is None and version is None) or (served is not None and served["version"] == version)

    return check


def model_info(versions: Versions, path: Path, alias: str, registry_version: int) -> float | None:
    labels = {
        "model_version": versions.content_id(path),
        "backbone": "efficientnet_lite0",
        "precision": "fp32",
        "alias": alias,
        "registry_version": str(registry_version),
    }
    return REGISTRY.get_sample_value("catdog_model_info", labels)


# --- the sources -----------------------------------------------------------------------------------------------
def test_pinned_source_is_production_only(tmp_path: Path) -> None:
    assert PinnedSource(tmp_path).resolve() == {"production": ServedModel("production", None, tmp_path)}


def test_registry_source_asks_each_version_directory_once(tmp_path: Path) -> None:
    class Registry:
        def __init__(self) -> None:
            self.current = {"production": 3, "staging": 4}
            self.asked: list[int] = []

        def aliases(self) -> dict[str, int]:
            return self.current

        def local_model_dir(self, version: int) -> Path:
            self.asked.append(version)
            return tmp_path / f"v{version}"

    registry = Registry()
    source = RegistrySource(registry)
    assert source.resolve() == {
        "production": ServedModel("production", 3, tmp_path / "v3"),
        "staging": ServedModel("staging", 4, tmp_path / "v4"),
    }
    registry.current = {"production": 4}
    assert source.resolve() == {"production": ServedModel("production", 4, tmp_path / "v4")}
    assert registry.asked == [3, 4]


# --- hot swap ----------------------------------------------------------------------------------------------------
def test_production_swaps_twice_under_load_with_zero_failed_requests(versions: Versions, tmp_path: Path) -> None:
    source = FakeSource(production=(1, versions.v1))
    results: list[tuple[float, int, Any]] = []  # (sent at, status, answer)
    stop = threading.Event()
    with serving(source, tmp_path / "state", max_queue_size=32) as client:
        service = service_of(client)

        def predicting(k: int) -> None:
            i = 0
            while not stop.is_set():
                sent = time.monotonic()
                response = post(client, distinct(1000 * k + i))
                results.append((sent, response.status_code, response.json()))
                i += 1

        threads = [threading.Thread(target=predicting, args=(k,)) for k in range(8)]
        [t.start() for t in threads]
        time.sleep(1)
        swapped: list[tuple[int, float, float]] = []  # (version, source changed at, swap seen at)
        for version, path in ((2, versions.v2), (1, versions.v1)):
            changed = time.monotonic()
            source.set(production=(version, path))
            wait_for(serves(service, "production", version))
            swapped.append((version, changed, time.monotonic()))
            time.sleep(1.5)
        stop.set()
        [t.join() for t in threads]
        assert service.state.swaps == 2 and service.state.swap_error is None
        wait_for(lambda: [t.name for t in threading.enumerate()].count("batcher-production") == 1, 10)

    assert results and [s for _, s, _ in results if s != 200] == []
    content = {1: versions.content_id(versions.v1), 2: versions.content_id(versions.v2)}
    assert all(answer["model_version"] == content[answer["registry_version"]] for _, _, answer in results)
    for n, (version, _, seen) in enumerate(swapped):
        until = swapped[n + 1][1] if n + 1 < len(swapped) else math.inf
        after = [a["registry_version"] for sent, _, a in results if seen <= sent < until]
        assert after and set(after) == {version}  # sent after the swap: the new model answers
    assert model_info(versions, versions.v2, "production", 2) == 0
    assert model_info(versions, versions.v1, "production", 1) == 1


def test_a_request_in_flight_finishes_on_the_model_it_started_on(versions: Versions, tmp_path: Path) -> None:
    source = FakeSource(production=(1, versions.v1))
    with serving(source, tmp_path / "state") as client:
        service = service_of(client)
        old = service.batcher
        assert old is not None
        hold = threading.Event()
        original = old.run_batch

        def held(jobs: list[Any]) -> Any:
            hold.wait(30)
            return original(jobs)

        old.run_batch = held
        answers: list[Any] = []
        thread = threading.Thread(target=lambda: answers.append(post(client, distinct(1))))
        thread.start()
        wait_for(lambda: service.in_flight == 1)
        source.set(production=(2, versions.v2))
        wait_for(serves(service, "production", 2))  # the swap does not wait for the held request
        newer = post(client, distinct(2))
        assert newer.status_code == 200 and newer.json()["registry_version"] == 2
        assert old._thread is not None  # the old batcher still runs: a request holds it
        hold.set()
        thread.join()
        (answer,) = answers
        assert answer.status_code == 200 and answer.json()["registry_version"] == 1
        assert answer.json()["model_version"] == versions.content_id(versions.v1)
        wait_for(lambda: old._thread is None, 5)  # then it is stopped


def test_a_model_that_fails_to_load_is_never_served_and_not_retried_at_once(
    versions: Versions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FakeSource(production=(1, versions.v1))
    loads: list[Path] = []
    real = control_module.Predictor

    def counting(model_dir: Path, **options: Any) -> Any:
        loads.append(Path(model_dir))
        return real(model_dir, **options)

    monkeypatch.setattr(control_module, "Predictor", counting)
    with serving(source, tmp_path / "state") as client:
        service = service_of(client)
        source.set(production=(3, versions.broken))
        wait_for(lambda: service.state.swap_error is not None)
        assert "registry version 3" in service.state.swap_error  # type: ignore[operator]
        time.sleep(0.5)  # five more polls
        assert loads.count(versions.broken) == 1  # backed off
        assert client.get("/ready").status_code == 200
        answer = post(client, distinct(3))
        assert answer.status_code == 200 and answer.json()["registry_version"] == 1
        source.set(production=(2, versions.v2))  # another version: tried at once
        wait_for(serves(service, "production", 2))
        assert service.state.swap_error is None


def test_a_failed_start_serves_once_the_source_names_a_good_model(versions: Versions, tmp_path: Path) -> None:
    source = FakeSource(production=(1, versions.broken))
    settings = make_settings(tmp_path / "state", registry_poll_seconds=0.1)
    app = create_app(settings, versions.broken, configure_logs=False)
    app_state(app).model_source = source
    with TestClient(app) as client:
        wait_for(lambda: client.get("/ready").json()["phase"] == "failed")
        assert post(client, distinct(4)).status_code == 503
        source.set(production=(2, versions.v2))
        wait_for(lambda: client.get("/ready").status_code == 200)
        answer = post(client, distinct(4))
        assert answer.status_code == 200 and answer.json()["registry_version"] == 2


# --- A/B -----------------------------------------------------------------------------------------------------------
def test_a_share_of_predictions_goes_to_staging(versions: Versions, tmp_path: Path) -> None:
    share, n = 0.3, 400
    source = FakeSource(production=(1, versions.v1), staging=(2, versions.v2))
    options = {"ab_staging_share": share, "prediction_cache_size": 0, "max_batch_size": 8}
    with serving(source, tmp_path / "state", **options) as client:
        service = service_of(client)
        wait_for(serves(service, "staging", 2))
        answers = []
        for start in range(0, n, 16):
            files = [("files", (f"{i}.jpg", distinct(i), "image/jpeg")) for i in range(start, start + 16)]
            response = client.post("/api/predict/batch", files=files)
            assert response.status_code == 200
            answers += response.json()["predictions"]
        served = service.served()
        # promoting staging: production takes the loaded staging model, staging equal to it is dropped
        source.set(production=(2, versions.v2), staging=(2, versions.v2))
        wait_for(serves(service, "staging", None))
        promoted = service.served()["production"]

    assert served["staging"] == {"version": 2, "model_version": versions.content_id(versions.v2)}
    assert promoted == {"version": 2, "model_version": versions.content_id(versions.v2)}
    assert len(answers) == n and not any(a["cached"] for a in answers)
    content = {1: versions.content_id(versions.v1), 2: versions.content_id(versions.v2)}
    assert all(a["model_version"] == content[a["registry_version"]] for a in answers)
    staged = sum(a["registry_version"] == 2 for a in answers)
    sigma = math.sqrt(n * share * (1 - share))
    assert abs(staged - n * share) <= 4 * sigma, staged


def test_share_zero_never_uses_staging(versions: Versions, tmp_path: Path) -> None:
    source = FakeSource(production=(1, versions.v1), staging=(2, versions.v2))
    with serving(source, tmp_path / "state", ab_staging_share=0.0) as client:
        service = service_of(client)
        time.sleep(0.3)  # three polls
        assert service.served()["staging"] is None
        answers = [post(client, distinct(i)).json() for i in range(20)]
    assert {a["registry_version"] for a in answers} == {1}
