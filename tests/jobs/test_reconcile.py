"""After a worker dies while registering, the registry's verdicts, aliases and the job's row agree again."""

from __future__ import annotations

from pathlib import Path

import pytest

from catdog.db import jobs
from catdog.db.models import RetrainStatus, UploadSource
from catdog.db.session import make_engine, migrate, session_factory
from catdog.jobs.reconcile import INTERRUPTED, reconcile, reconcile_registrations
from catdog.jobs.retrain import run_retrain_job
from catdog.jobs.worker import recover_jobs
from catdog.registry import Registry, training_dataset
from catdog.settings import Settings
from catdog.uploads import UploadStore

from ..conftest import CATSDOGS


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` catches it, so nothing after it runs."""


def _session(settings: Settings) -> object:
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    return session_factory(engine)()


def _job(settings: Settings, job_id: str) -> dict[str, object]:
    with _session(settings) as session:  # type: ignore[attr-defined]
        return jobs.job_dict(jobs.get_job(session, job_id))


def _new_job(settings: Settings) -> str:
    with _session(settings) as session:  # type: ignore[attr-defined]
        return str(jobs.create_job(session).id)


def _fail(settings: Settings, job_id: str, error: str) -> None:
    with _session(settings) as session:  # type: ignore[attr-defined]
        assert jobs.claim_job(session, job_id, "elsewhere:1")
        jobs.finish_job(session, job_id, RetrainStatus.FAILED, error=error)


def _register(settings: Settings, model: Path, job_id: str | None, verdict: str = "promoted") -> int:
    """A version as retrain() registers it (tags first, no alias yet)."""
    tags = {"gate_verdict": verdict, "gate_reason": "not worse than production: accuracy 0.9 vs 0.9"}
    if job_id is not None:
        tags["job_id"] = job_id
    info = Registry(settings).log_training_run(
        model,
        source="retrain",
        params={"epochs": 1},
        history=[],
        test_metrics={"accuracy": 0.9, "n": 12},
        dataset=training_dataset({"fingerprint": "ab" * 32, "counts": {}}, "test"),
        parent_version=1,
        tags=tags,
    )
    return info.version


def test_a_worker_killed_between_registering_and_promoting(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tester's fault: the version said `promoted` with no alias, the job said failed, the page said promoted."""
    store = UploadStore(settings.uploads_dir, settings.data_dir / "train")
    with _session(settings) as session:  # type: ignore[attr-defined]
        for path in sorted((CATSDOGS / "test" / "cats").iterdir())[:2]:
            store.add(session, path.read_bytes(), "cats", path.name, UploadSource.UPLOAD)
    job_id = _new_job(settings)

    def killed(self: Registry, version: int, reason: str = "") -> None:
        raise Killed  # the worker dies right after the version was registered with its verdict

    monkeypatch.setattr(Registry, "promote", killed)
    with pytest.raises(Killed):
        run_retrain_job(job_id, settings)
    monkeypatch.undo()
    registry = Registry(settings)
    (new,) = [info for info in registry.versions() if info.source == "retrain"]
    assert new.tags["gate_verdict"] == "promoted" and new.tags["job_id"] == job_id  # the inconsistent state
    assert registry.aliases() == {"production": 1}

    # the next worker start: it fails the job of the dead worker, then reconciles
    with _session(settings) as session:  # type: ignore[attr-defined]
        failed, _ = recover_jobs(session, settings.state_dir)
    assert failed == [job_id]
    (repair,) = reconcile(settings)
    assert (repair.version, repair.job_id, repair.action) == (new.version, job_id, INTERRUPTED)

    registry = Registry(settings)
    assert registry.aliases() == {"production": 1}  # production never moved silently
    shown = registry.get(new.version).to_dict()["gate"]
    assert shown["verdict"] == INTERRUPTED and "production is unchanged" in shown["reason"]
    assert "not worse than production" in registry.get(new.version).tags["gate_reason_before"]
    view = _job(settings, job_id)
    assert view["status"] == "failed" and view["version"] == new.version
    error = str(view["error"])
    assert f"registering version {new.version}" in error and "production is unchanged" in error
    assert view["gate"]["promoted"] is False  # type: ignore[index]
    assert reconcile(settings) == []  # once is enough


def test_a_worker_killed_after_promoting_completes_its_job_row(settings: Settings, lite0_model: Path) -> None:
    job_id = _new_job(settings)
    version = _register(settings, lite0_model, job_id)
    Registry(settings).promote(version, reason="the gate")
    _fail(settings, job_id, "the worker (pid 1) stopped in the middle of the job; production is unchanged")
    with _session(settings) as session:  # type: ignore[attr-defined]
        (repair,) = reconcile_registrations(Registry(settings), session)
    assert repair.action == "job completed"
    view = _job(settings, job_id)
    assert view["status"] == "succeeded" and view["error"] is None and view["version"] == version
    assert view["gate"]["promoted"] is True  # type: ignore[index]
    assert Registry(settings).aliases()["production"] == version
    assert Registry(settings).get(version).tags["gate_verdict"] == "promoted"


def test_a_version_whose_job_still_runs_is_left_alone(settings: Settings, lite0_model: Path) -> None:
    job_id = _new_job(settings)
    with _session(settings) as session:  # type: ignore[attr-defined]
        assert jobs.claim_job(session, job_id, "elsewhere:1")
    version = _register(settings, lite0_model, job_id)  # its worker promotes it a moment later
    legacy = _register(settings, lite0_model, None)  # no job_id tag: undecidable while a job runs
    with _session(settings) as session:  # type: ignore[attr-defined]
        assert reconcile_registrations(Registry(settings), session) == []
        jobs.finish_job(session, job_id, RetrainStatus.FAILED, error="disk full")
        repairs = reconcile_registrations(Registry(settings), session)
    assert sorted((r.version, r.action) for r in repairs) == [(version, INTERRUPTED), (legacy, INTERRUPTED)]
    assert Registry(settings).aliases() == {"production": 1}


def test_staging_of_a_finished_job_is_not_touched(settings: Settings, lite0_model: Path) -> None:
    job_id = _new_job(settings)
    version = _register(settings, lite0_model, job_id, verdict="staging")
    Registry(settings).set_alias("staging", version)
    with _session(settings) as session:  # type: ignore[attr-defined]
        jobs.claim_job(session, job_id, "elsewhere:1")
        jobs.finish_job(session, job_id, RetrainStatus.SUCCEEDED, result={"version": version})
        assert reconcile_registrations(Registry(settings), session) == []
    assert Registry(settings).get(version).tags["gate_verdict"] == "staging"


def test_reconcile_never_raises(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("the registry is down")

    monkeypatch.setattr(Registry, "versions", broken)
    assert reconcile(settings) == []
