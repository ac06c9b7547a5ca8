"""The retrain's label check on the fixtures: flipped uploads are quarantined and not trained on; Keep; off.

Real photos (the committed fixtures) through the tiny Lite0 production: the base set is the 56
training fixtures, the uploads 4 unseen cat photos uploaded as dogs and 16 correctly labelled ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from catdog.db import jobs
from catdog.db.models import Upload, UploadSource
from catdog.db.session import make_engine, migrate, session_factory
from catdog.jobs.retrain import run_retrain_job
from catdog.ml.artifacts import ModelConfig
from catdog.registry import Registry
from catdog.settings import Settings
from catdog.uploads import UploadStore, keep_upload

from ..conftest import CATSDOGS, FIXTURES
from .conftest import retrain_settings

RECENT = FIXTURES / "drift" / "recent"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """train/ = the catsdogs and drift training fixtures (56 photos), test/ = the catsdogs test split (links)."""
    root = tmp_path / "data"
    for class_dir in ("cats", "dogs"):
        for split, sources in (("train", ("catsdogs/train", "drift/train")), ("test", ("catsdogs/test",))):
            folder = root / split / class_dir
            folder.mkdir(parents=True)
            for source in sources:
                for photo in sorted((FIXTURES / source / class_dir).iterdir()):
                    os.symlink(photo, folder / f"{source.replace('/', '-')}-{photo.name}")
    return root


@pytest.fixture
def settings(tmp_path: Path, shipped_lite0: Path, data_dir: Path) -> Settings:
    settings = retrain_settings(tmp_path, shipped_lite0, data_dir=data_dir, label_check_folds=5)
    Registry(settings).bootstrap()
    return settings


def _upload(settings: Settings, paths: list[Path], class_name: str) -> list[str]:
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    store = UploadStore(settings.uploads_dir, settings.data_dir / "train")
    with session_factory(engine)() as session:
        hashes = [store.add(session, p.read_bytes(), class_name, p.name, UploadSource.UPLOAD).sha256 for p in paths]
    engine.dispose()
    return hashes


def _retrain(settings: Settings) -> dict[str, object]:
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    with session_factory(engine)() as session:
        job_id = jobs.create_job(session).id
    run_retrain_job(job_id, settings)
    with session_factory(engine)() as session:
        view = jobs.job_dict(jobs.get_job(session, job_id))
    engine.dispose()
    assert view["status"] == "succeeded", view["error"]
    return view


def _rows(settings: Settings) -> dict[str, Upload]:
    engine = make_engine(settings.sqlalchemy_url)
    with session_factory(engine)() as session:
        rows = {row.sha256: row for row in session.scalars(select(Upload))}
    engine.dispose()
    return rows


def test_flipped_uploads_wait_in_quarantine_until_an_admin_keeps_one(settings: Settings) -> None:
    cats, dogs = sorted((RECENT / "cats").iterdir()), sorted((RECENT / "dogs").iterdir())
    flipped = _upload(settings, cats[:4], "dogs")
    correct = _upload(settings, cats[4:12], "cats") + _upload(settings, dogs[:8], "dogs")
    view = _retrain(settings)
    check = view["label_check"]
    assert isinstance(check, dict) and check["enabled"] and check["checked"] == 20 and check["folds"] == 5
    rows = _rows(settings)
    quarantined = {sha for sha, row in rows.items() if row.quarantined}
    assert len(quarantined & set(flipped)) >= 3, check
    assert len(quarantined & set(correct)) <= 1, check
    assert check["quarantined"] == len(quarantined) and check["trained"] == 20 - len(quarantined)
    assert isinstance(check["base_issues"], dict) and check["base_issues"]["of"] == 56
    for sha in quarantined:
        row = rows[sha]
        assert row.label_p is not None and row.label_p < 0.5 and row.checked_at is not None
        assert (
            row.quarantine_reason and f"P({'dog' if row.class_name == 'dogs' else 'cat'}) = " in row.quarantine_reason
        )
    assert all(rows[sha].label_p is not None for sha in correct)
    # the new version trained on the base set plus the uploads that were not quarantined, nothing else
    data = ModelConfig.load(Registry(settings).get(2).model_dir).data
    assert data["unique_images"] == 56 + 20 - len(quarantined)

    kept = sorted(quarantined)[0]
    engine = make_engine(settings.sqlalchemy_url)
    with session_factory(engine)() as session:
        assert keep_upload(session, kept) is not None
    engine.dispose()
    again = _retrain(settings)["label_check"]
    assert isinstance(again, dict) and again["kept"] == 1
    after = _rows(settings)
    assert after[kept].kept_by_admin and not after[kept].quarantined  # an admin's word stands
    assert again["trained"] == 20 - sum(row.quarantined for row in after.values())
    assert ModelConfig.load(Registry(settings).get(3).model_dir).data["unique_images"] == 56 + again["trained"]


def test_with_the_check_off_every_upload_trains(settings: Settings) -> None:
    cats = sorted((RECENT / "cats").iterdir())
    flipped = _upload(settings, cats[:2], "dogs")
    _upload(settings, cats[2:6], "cats")
    engine = make_engine(settings.sqlalchemy_url)
    with session_factory(engine)() as session:
        row = session.get(Upload, flipped[0])
        assert row is not None
        row.quarantined, row.quarantine_reason = True, "an earlier check"
        session.commit()
    engine.dispose()
    off = settings.model_copy(update={"label_check": False})
    check = _retrain(off)["label_check"]
    assert check == check | {"enabled": False, "checked": 0, "quarantined": 0, "trained": 6}
    assert not any(row.quarantined for row in _rows(off).values())
    assert ModelConfig.load(Registry(off).get(2).model_dir).data["unique_images"] == 56 + 6
    assert CATSDOGS.is_dir()
