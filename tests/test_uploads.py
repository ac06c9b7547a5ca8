"""The upload store: decoded like predictions, stored once by content, atomic, never by the client's name."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from catdog.db.models import UploadSource
from catdog.db.session import make_engine, migrate, session_factory
from catdog.ml.data import load_split
from catdog.ml.preprocessing import ImageDecodeError
from catdog.uploads import UnknownClass, UploadStore, list_uploads, upload_counts

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
        again = store.add(session, _photo().read_bytes(), "dogs", "b.jpg", UploadSource.UPLOAD)
        assert (again.status, again.duplicate_of, again.class_name) == ("duplicate", "upload", "cats")
        base = store.add(session, _photo("train").read_bytes(), "cats", "c.jpg", UploadSource.UPLOAD)
        assert (base.status, base.duplicate_of) == ("duplicate", "training set")
        assert upload_counts(session)["total"] == 1 and first.status == "stored"
        assert len(list(store.root.rglob("*.jpg"))) == 1


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
