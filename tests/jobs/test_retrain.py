"""The retraining job end to end on the fixtures: train, evaluate, register, gate; cancel; faults."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from catdog.db import jobs
from catdog.db.models import RetrainJob, UploadSource
from catdog.db.session import make_engine, migrate, session_factory
from catdog.jobs.retrain import NotEnoughData, check_training_data, run_retrain_job
from catdog.ml.artifacts import ModelConfig
from catdog.registry import Registry
from catdog.settings import Settings
from catdog.uploads import UploadStore

from ..conftest import CATSDOGS, record_session_threads, settings_apart_from_the_environment
from .conftest import retrain_settings


def _new_job(settings: Settings, cancel: bool = False) -> str:
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    with session_factory(engine)() as session:
        job = jobs.create_job(session)
        if cancel:  # a cancel that arrives right after the worker claimed the job
            session.execute(update(RetrainJob).where(RetrainJob.id == job.id).values(cancel_requested=True))
            session.commit()
    engine.dispose()
    return job.id


def _job(settings: Settings, job_id: str) -> dict[str, object]:
    engine = make_engine(settings.sqlalchemy_url)
    with session_factory(engine)() as session:
        view = jobs.job_dict(jobs.get_job(session, job_id))
    engine.dispose()
    return view


def _upload(settings: Settings, paths: list[Path], class_name: str) -> None:
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    store = UploadStore(settings.uploads_dir, settings.data_dir / "train")
    with session_factory(engine)() as session:
        for path in paths:
            store.add(session, path.read_bytes(), class_name, path.name, UploadSource.UPLOAD)
    engine.dispose()


def test_a_retrain_registers_a_version_and_the_gate_promotes_it(settings: Settings) -> None:
    _upload(settings, sorted((CATSDOGS / "test" / "cats").iterdir())[:2], "cats")
    job_id = _new_job(settings)
    run_retrain_job(job_id, settings)
    view = _job(settings, job_id)
    assert view["status"] == "succeeded", view["error"]
    assert view["phase"] == "done" and view["percent"] == 100.0
    registry = Registry(settings)
    assert view["version"] == 2 and registry.aliases()["production"] == 2
    new = registry.get(2)
    assert new.source == "retrain" and new.tags["parent_version"] == "1"
    assert new.tags["gate_verdict"] == "promoted" and "not worse" in new.tags["gate_reason"]
    assert new.metrics["accuracy"] == view["metrics"]["accuracy"]  # type: ignore[index]
    assert (new.model_dir / "model.onnx").is_file() and (new.model_dir / "plots").is_dir()
    assert not (settings.state_dir / "jobs" / job_id).exists()  # the job's folder is gone
    assert view["gate"]["promoted"] is True  # type: ignore[index]
    # every check of the gate is on the version, with its figures, and in the job's result
    checks = {check["name"]: check for check in new.gate_checks()}
    assert set(checks) == {"production", "mcnemar", "reference", "floor"} and all(c["passed"] for c in checks.values())
    assert checks["production"]["production_version"] == 1 and checks["reference"]["reference_version"] == 1
    assert checks["reference"]["source"] == "first production" and new.tags["gate_reference"] == "1"
    assert checks["mcnemar"]["skipped"] is False and checks["mcnemar"]["n"] == new.metrics["n"]
    assert checks["floor"]["accuracy"] == pytest.approx(new.metrics["accuracy"])


def test_a_worse_version_stays_staging(settings: Settings) -> None:
    """Trained with the test photos under the wrong labels, the new version loses to production."""
    test = CATSDOGS / "test"
    _upload(settings, sorted((test / "cats").iterdir()), "dogs")
    _upload(settings, sorted((test / "dogs").iterdir()), "cats")
    # the label check would quarantine these flipped uploads: off, so that they train (and do harm)
    strict = settings.model_copy(update={"gate_tolerance": 0.0, "label_check": False})
    job_id = _new_job(strict)
    run_retrain_job(job_id, strict)
    view = _job(strict, job_id)
    assert view["status"] == "succeeded", view["error"]
    assert view["gate"] == {"promoted": False, "reason": view["gate"]["reason"]}  # type: ignore[index]
    assert "worse than production" in view["gate"]["reason"]  # type: ignore[index]
    aliases = Registry(strict).aliases()
    assert aliases == {"production": 1, "staging": 2}


def test_a_cancelled_job_changes_nothing(settings: Settings) -> None:
    job_id = _new_job(settings, cancel=True)
    run_retrain_job(job_id, settings)
    view = _job(settings, job_id)
    assert view["status"] == "cancelled" and "production is unchanged" in str(view["error"])
    assert [v.version for v in Registry(settings).versions()] == [1]


def test_an_unwritable_job_folder_fails_the_job_clearly(settings: Settings) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "jobs").write_text("not a folder")
    job_id = _new_job(settings)
    run_retrain_job(job_id, settings)
    view = _job(settings, job_id)
    assert view["status"] == "failed" and "production is unchanged" in str(view["error"])
    assert Registry(settings).aliases() == {"production": 1}


def test_too_little_data_is_refused_up_front(tmp_path: Path, shipped_lite0: Path) -> None:
    settings = retrain_settings(tmp_path, shipped_lite0, retrain_min_per_class=100)
    with pytest.raises(NotEnoughData, match="at least 100 per class"):
        check_training_data(settings)
    nowhere = retrain_settings(tmp_path, shipped_lite0, data_dir=tmp_path / "none")
    with pytest.raises(NotEnoughData, match="no base training set"):
        check_training_data(nowhere)
    assert check_training_data(settings.model_copy(update={"retrain_min_per_class": 5}))["base"]["cats"] == 16


def test_a_full_disk_is_named_as_such() -> None:
    import errno

    from catdog.jobs.retrain import _disk_reason

    full = _disk_reason(OSError(errno.ENOSPC, "No space left on device", "/state/jobs/x/model/model.onnx"))
    assert full.startswith("the disk is full (/state/jobs/x/model/model.onnx)") and "production is unchanged" in full
    denied = _disk_reason(PermissionError(errno.EACCES, "Permission denied", "/models"))
    assert denied.startswith("cannot write (/models): Permission denied")


def test_a_retrain_given_settings_uses_them_not_the_environment(
    tmp_path: Path, shipped_lite0: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Label check, training, evaluation and drift reference: the job's settings' caches, threads and precision."""
    base = retrain_settings(tmp_path, shipped_lite0)
    Registry(base).bootstrap()
    settings = settings_apart_from_the_environment(tmp_path, monkeypatch, base=base, threads=1, precision="fp32")
    threads = record_session_threads(monkeypatch)
    _upload(settings, sorted((CATSDOGS / "test" / "cats").iterdir())[:2], "cats")
    job_id = _new_job(settings)
    run_retrain_job(job_id, settings)
    view = _job(settings, job_id)
    assert view["status"] == "succeeded", view["error"]  # CATDOG_PRECISION=int8 would fail it: Lite0 has no int8
    assert view["version"] == 2 and ModelConfig.load(Registry(settings).get(2).model_dir).precision == "fp32"
    assert list((tmp_path / "mine" / "features").glob("efficientnet_lite0-*.sqlite"))
    assert threads and set(threads) == {1}
    assert not (tmp_path / "env").exists()
