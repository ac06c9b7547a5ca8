"""The upload store: decoded like predictions, stored once by content, atomic, never by the client's name."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from catdog.db.models import Upload, UploadSource
from catdog.db.session import make_engine, migrate, session_factory
from catdog.ml.data import load_split, sha256_bytes
from catdog.ml.preprocessing import ImageDecodeError
from catdog.uploads import (
    ModelOpinion,
    UnknownClass,
    UploadStore,
    keep_upload,
    list_uploads,
    quarantine_counts,
    upload_counts,
    upload_dict,
)

from .conftest import CATSDOGS, FIXTURES


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    return session_factory(engine)


@pytest.fixture
def store(tmp_path: Path) -> UploadStore:
    return UploadStore(tmp_path / "uploads", CATSDOGS / "train")


def _photo(split: str = "test", class_dir: str = "cats", index: int = 0) -> Path:
    return sorted((CATSDOGS / split / class_dir).iterdir())[index]


def test_an_image_is_stored_by_content_under_its_class(store: UploadStore, sessions: sessionmaker[Session]) -> None:
    data = _photo().read_bytes()
    with sessions() as session:
        entry = store.add(session, data, "cats", "../../etc/passwd.jpg", UploadSource.UPLOAD)
        assert entry.status == "stored" and entry.filename == "passwd.jpg"
        path = store.root / "cats" / f"{entry.sha256}.jpg"
        assert path.read_bytes() == data and [p.name for p in store.root.rglob("*.part")] == []
        assert upload_counts(session) == {"cats": 1, "dogs": 0, "total": 1}
        rows, total = list_uploads(session, "cats", 10, 0)
        assert total == 1 and rows[0].filename == "passwd.jpg" and rows[0].source == "upload"
    assert [s.sha256 for s in load_split(store.root).samples] == [entry.sha256]  # training reads the folder as it is


def test_duplicates_of_uploads_and_of_the_training_set_are_not_stored(
    store: UploadStore, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        first = store.add(session, _photo().read_bytes(), "cats", "a.jpg", UploadSource.UPLOAD)
        again = store.add(session, _photo().read_bytes(), "cats", "b.jpg", UploadSource.UPLOAD)
        assert (again.status, again.duplicate_of, again.class_name) == ("duplicate", "upload", "cats")
        base = store.add(session, _photo("train").read_bytes(), "cats", "c.jpg", UploadSource.UPLOAD)
        assert (base.status, base.duplicate_of) == ("duplicate", "training set")
        assert upload_counts(session)["total"] == 1 and first.status == "stored"
        assert len(list(store.root.rglob("*.jpg"))) == 1


def test_a_duplicate_under_the_other_class_is_a_label_conflict(
    store: UploadStore, sessions: sessionmaker[Session]
) -> None:
    """A base-set cat uploaded as a dog (or an upload sent again as the other class) is named a conflict."""
    assert store.base_hashes()[sha256_bytes(_photo("train", "dogs").read_bytes())] == "dogs"
    with sessions() as session:
        flipped = store.add(session, _photo("train", "cats").read_bytes(), "dogs", "c.jpg", UploadSource.UPLOAD)
        answer = flipped.to_dict()
        assert (answer["status"], answer["duplicate_of"], answer["class"]) == ("conflict", "training set", "cats")
        assert answer["conflict"] is True and "base training set as cats" in answer["detail"]
        store.add(session, _photo().read_bytes(), "cats", "a.jpg", UploadSource.UPLOAD)
        again = store.add(session, _photo().read_bytes(), "dogs", "b.jpg", UploadSource.UPLOAD).to_dict()
        assert (again["status"], again["duplicate_of"], again["class"], again["conflict"]) == (
            "conflict",
            "upload",
            "cats",
            True,
        )
        assert upload_counts(session)["total"] == 1


def test_the_served_models_opinion_is_kept_with_the_upload(store: UploadStore, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        entry = store.add(
            session, _photo().read_bytes(), "cats", "a.jpg", UploadSource.UPLOAD, ModelOpinion("dog", 0.8)
        ).to_dict()
        assert (entry["predicted_class"], entry["p_label"], entry["label_agrees"]) == ("dog", 0.2, False)
        shown = upload_dict(list_uploads(session, None, 10, 0)[0][0])
        assert (shown["predicted_class"], shown["p_label"], shown["label_agrees"]) == ("dog", 0.2, False)
        assert shown["quarantined"] is False and shown["quarantine_reason"] is None and not shown["kept_by_admin"]
        blind = store.add(session, _photo(index=1).read_bytes(), "dogs", "b.jpg", UploadSource.UPLOAD).to_dict()
        assert blind["predicted_class"] is None and blind["p_label"] is None and blind["label_agrees"] is None


def test_quarantine_filter_and_keep(store: UploadStore, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        a = store.add(session, _photo().read_bytes(), "cats", "a.jpg", UploadSource.UPLOAD)
        store.add(session, _photo(index=1).read_bytes(), "cats", "b.jpg", UploadSource.UPLOAD)
        row = session.get(Upload, a.sha256)
        assert row is not None
        row.quarantined, row.quarantine_reason = True, "label looks wrong"
        session.commit()
        rows, total = list_uploads(session, None, 10, 0, quarantined=True)
        assert total == 1 and [r.sha256 for r in rows] == [a.sha256]
        assert list_uploads(session, "cats", 10, 0, quarantined=False)[1] == 1
        assert quarantine_counts(session) == {"quarantined": 1, "kept": 0}
        kept = keep_upload(session, a.sha256)
        assert kept is not None and kept.kept_by_admin and not kept.quarantined
        assert quarantine_counts(session) == {"quarantined": 0, "kept": 1}
        assert keep_upload(session, "0" * 64) is None


def test_bad_input_harms_nothing(store: UploadStore, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for name in ("empty.jpg", "notes.txt", "truncated.jpg"):
            data = (FIXTURES / "bad" / name).read_bytes()
            with contextlib.suppress(ImageDecodeError):  # a JPEG without its end is repaired, as for predictions
                store.add(session, data, "dogs", name, UploadSource.UPLOAD)
        with pytest.raises(UnknownClass, match="cats, dogs"):
            store.add(session, _photo().read_bytes(), "birds", "x.jpg", UploadSource.UPLOAD)
        assert upload_counts(session)["total"] == len(list(store.root.rglob("*.*")))


def test_a_format_training_does_not_read_is_kept_as_png(store: UploadStore, sessions: sessionmaker[Session]) -> None:
    buffer = io.BytesIO()
    Image.open(_photo()).convert("RGB").save(buffer, "PPM")
    with sessions() as session:
        entry = store.add(session, buffer.getvalue(), "cats", "cat.ppm", UploadSource.UPLOAD)
    stored = store.root / "cats" / f"{entry.sha256}.png"
    assert stored.is_file() and Image.open(stored).format == "PNG"


def test_delete_removes_row_and_file(store: UploadStore, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        entry = store.add(session, _photo().read_bytes(), "cats", "a.jpg", UploadSource.UPLOAD)
        assert store.delete(session, entry.sha256) and not store.delete(session, entry.sha256)
        assert list(store.root.rglob("*.jpg")) == [] and upload_counts(session)["total"] == 0
