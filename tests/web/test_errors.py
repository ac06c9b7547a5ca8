"""Errors carry their HTTP status (catdog.errors.CatdogError.status_code): one handler answers them all."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from catdog.db.feedback import AlreadyGiven, UnknownPrediction
from catdog.db.jobs import JobConflict, JobFinished, TooLateToCancel, UnknownJob
from catdog.errors import CatdogError, UsageProblem
from catdog.jobs.retrain import NotEnoughData
from catdog.ml.preprocessing import ImageDecodeError
from catdog.registry import NothingToRollBack, ReferenceNotBetter, UnknownVersion
from catdog.uploads import InTestSplit, UnknownClass
from catdog.web import service
from catdog.web.batching import BatcherStopped, Overloaded
from catdog.web.disk import DiskFull
from catdog.web.errors import install_error_handlers
from catdog.web.problems import NotReady, UploadTooLarge

CASES: list[tuple[Exception, int, str]] = [
    (ImageDecodeError("not an image"), 415, "not an image"),
    (UploadTooLarge("the file is over the limit of 1 MiB"), 413, "the file is over the limit of 1 MiB"),
    (NotReady("the model is warming"), 503, "not ready: the model is warming"),
    (BatcherStopped("batcher-production is stopped"), 503, "not ready: batcher-production is stopped"),
    (UnknownVersion("no version 7 of catdog"), 404, "no version 7 of catdog"),
    (NothingToRollBack("nothing to roll back"), 409, "nothing to roll back"),
    (ReferenceNotBetter("less accurate"), 409, "less accurate"),
    (JobConflict("abc"), 409, "a retraining job is already running (job abc); wait for it or cancel it"),
    (JobFinished("job abc has already ended (failed)"), 409, "job abc has already ended (failed)"),
    (TooLateToCancel("too late"), 409, "too late"),
    (UnknownJob("no job 'abc'"), 404, "no job 'abc'"),  # a KeyError, shown without KeyError's quotes
    (AlreadyGiven("prediction x already has feedback"), 409, "prediction x already has feedback"),
    (UnknownPrediction("no prediction 'x'"), 404, "no prediction 'x'"),
    (UnknownClass("class_name must be cats or dogs"), 400, "class_name must be cats or dogs"),
    (InTestSplit(), 409, str(InTestSplit())),
    (NotEnoughData("too few images"), 400, "too few images"),
]


def client_raising(exc: Exception) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(("exc", "status", "detail"), CASES, ids=[type(case[0]).__name__ for case in CASES])
def test_each_error_answers_its_own_status_with_its_text(exc: Exception, status: int, detail: str) -> None:
    response = client_raising(exc).get("/boom")
    assert (response.status_code, response.json()) == (status, {"detail": detail})
    assert ("retry-after" in response.headers) == (status == 503)


def test_overloaded_says_when_to_retry_in_the_body_and_the_header() -> None:
    response = client_raising(Overloaded(3.6, 64)).get("/boom")
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
    assert response.json() == {"detail": str(Overloaded(3.6, 64)), "retry_after": 3.6}


def test_an_error_without_a_status_is_an_internal_error_whose_text_is_withheld() -> None:
    for exc in (CatdogError("/srv/secret/path is broken"), UsageProblem("/srv/secret/model_config.json is missing")):
        response = client_raising(exc).get("/boom")
        assert response.status_code == 500 and "/srv" not in response.text, response.text


def test_disk_full_is_507() -> None:
    response = client_raising(DiskFull("the disk is full: upload a.jpg failed")).get("/boom")
    assert response.status_code == 507 and response.json() == {"detail": "the disk is full: upload a.jpg failed"}


def test_one_not_ready_and_one_upload_too_large_class() -> None:
    assert service.NotReady is NotReady and service.UploadTooLarge is UploadTooLarge  # re-exported, not redefined
    assert issubclass(BatcherStopped, NotReady)


def test_not_found_errors_are_still_key_errors() -> None:
    with pytest.raises(KeyError):
        raise UnknownJob("no job 'x'")
    assert str(UnknownPrediction("no prediction 'x'")) == "no prediction 'x'"
