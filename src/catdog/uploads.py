"""Training uploads: images users add per class, stored once by content, recorded in the database.

Files live at `uploads_dir/{cats,dogs}/{sha256}{suffix}`: the spec's class-folder layout, so the
uploads folder is itself a data split that training reads next to the base training set. A file
is judged by its bytes through the one decoding path (catdog.ml.preprocessing), never by its
name; the client's name is kept only for display. Writes are atomic (temporary file + rename),
and the row is committed only after the file is in place, so a failure leaves neither half.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catdog import CLASS_NAMES
from catdog.db.models import Upload, UploadSource
from catdog.errors import UsageProblem
from catdog.ml.data import CLASS_DIRS, IMAGE_SUFFIXES, folder_stamp
from catdog.ml.preprocessing import image_kind, open_image
from catdog.timefmt import iso_utc_or_none

# Format (by magic bytes) -> the suffix training reads; anything else is stored as a lossless PNG.
SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "WebP": ".webp",
    "HEIF": ".heic",
    "AVIF": ".avif",
}
RESCAN_AFTER_S = 10.0  # the base set and test split are read again at most this often to see changes
BROWSER_SUFFIXES = {".jpg", ".png", ".gif", ".bmp", ".webp", ".avif"}  # what browsers show as they are


class UnknownClass(UsageProblem):
    """A class name other than the data set's folders (cats, dogs); the API answers 400."""

    status_code = 400


class InTestSplit(UsageProblem):
    """The photo is in the test split: training on it would make every evaluation dishonest (409)."""

    status_code = 409

    def __init__(self) -> None:
        super().__init__("this photo is in the test split; training on it would make the evaluation dishonest")


@dataclass(frozen=True)
class ModelOpinion:
    """The served model's verdict on an uploaded photo: its class ("cat" | "dog") and P(dog) in [0, 1]."""

    predicted_class: str
    p_dog: float

    def p_label(self, class_name: str) -> float:
        """P(the class folder `class_name`: "cats" or "dogs"), rounded to 6 digits."""
        return round(self.p_dog if CLASS_DIRS[class_name] == 1 else 1.0 - self.p_dog, 6)

    def agrees(self, class_name: str) -> bool:
        return CLASS_NAMES[CLASS_DIRS[class_name]] == self.predicted_class


@dataclass(frozen=True)
class StoredImage:
    """What one uploaded file became."""

    filename: str | None
    sha256: str
    status: str  # "stored" | "duplicate" | "conflict" (a duplicate under the other class: not stored)
    duplicate_of: str | None  # None, "upload" or "training set"
    class_name: str  # the class it is stored under (an earlier upload's or the base set's for a duplicate)
    label: str | None = None  # the class it was uploaded as (None: class_name)
    opinion: ModelOpinion | None = None  # the served model's verdict (None: not ready, busy)

    def to_dict(self) -> dict[str, Any]:
        label = self.label or self.class_name
        return {
            "filename": self.filename,
            "sha256": self.sha256,
            "status": self.status,
            "duplicate_of": self.duplicate_of,
            "class": self.class_name,
            "conflict": self.status == "conflict",
            "predicted_class": None if self.opinion is None else self.opinion.predicted_class,
            "p_label": None if self.opinion is None else self.opinion.p_label(label),
            "label_agrees": None if self.opinion is None else self.opinion.agrees(label),
            "detail": self._detail(label),
        }

    def _detail(self, label: str) -> str | None:
        if self.status == "conflict":
            where = "the base training set" if self.duplicate_of == "training set" else "an earlier upload"
            return f"label conflict: this photo is in {where} as {self.class_name}, uploaded now as {label}; not stored"
        return None


def check_class(class_name: str) -> str:
    """The class folder name, or UnknownClass naming the valid ones."""
    if class_name not in CLASS_DIRS:
        raise UnknownClass(f"unknown class {class_name!r}: use one of {', '.join(CLASS_DIRS)}")
    return class_name


class UploadStore:
    """The uploads folder plus its rows; thread-safe (one lock around writes)."""

    def __init__(self, root: Path, base_train_dir: Path | None, test_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.base_train_dir = base_train_dir
        self.test_dir = test_dir
        self._lock = threading.Lock()
        self._hashes: dict[Path, tuple[tuple[int, int], Mapping[str, str]]] = {}
        self._checked: dict[Path, float] = {}  # when each folder's stamp was last read (time.monotonic)

    # --- writing -----------------------------------------------------------------------------------
    def ensure_folders(self) -> None:
        """Both class folders, even empty, so that the uploads folder always reads as a data split."""
        for name in CLASS_DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def add(
        self,
        session: Session,
        data: bytes,
        class_name: str,
        filename: str | None,
        source: UploadSource,
        opinion: ModelOpinion | None = None,
    ) -> StoredImage:
        """Check, store and record one image (with the served model's opinion, when given).

        A photo already stored (an upload, or the base training set) is not stored again: status
        "duplicate" under the same class, "conflict" under the other one (a label conflict).
        Raises ImageDecodeError (one line) for unreadable bytes, InTestSplit for a photo of the test split.
        """
        check_class(class_name)
        image = open_image(data)  # the decoding path predictions use: the same verdict on the same bytes
        digest = hashlib.sha256(data).hexdigest()
        if digest in self.test_hashes():
            raise InTestSplit()
        stored, suffix = _storable(data)
        if stored is not data:  # kept as PNG: stored once by what is on disk
            data, digest = stored, hashlib.sha256(stored).hexdigest()
        name = _display_name(filename)
        with self._lock:
            earlier = session.get(Upload, digest)
            if earlier is not None:
                status = "duplicate" if earlier.class_name == class_name else "conflict"
                return StoredImage(name, digest, status, "upload", earlier.class_name, class_name, opinion)
            base_class = self.base_hashes().get(digest)
            if base_class is not None:
                status = "duplicate" if base_class == class_name else "conflict"
                return StoredImage(name, digest, status, "training set", base_class, class_name, opinion)
            path = self.path_of(class_name, digest, suffix)
            self.ensure_folders()
            _write_atomic(path, data)
            row = Upload(
                sha256=digest,
                class_name=class_name,
                suffix=suffix,
                filename=name,
                bytes=len(data),
                width=image.width,
                height=image.height,
                source=source.value,
                predicted_class=None if opinion is None else opinion.predicted_class,
                p_label=None if opinion is None else opinion.p_label(class_name),
            )
            session.add(row)
            try:
                session.commit()
            except Exception:
                session.rollback()
                path.unlink(missing_ok=True)
                raise
        return StoredImage(name, digest, "stored", None, class_name, class_name, opinion)

    def delete(self, session: Session, sha256: str) -> bool:
        """Remove an upload's row and file; False when there is no such upload."""
        with self._lock:
            row = session.get(Upload, sha256)
            if row is None:
                return False
            path = self.path_of(row.class_name, row.sha256, row.suffix)
            session.delete(row)
            session.commit()
            path.unlink(missing_ok=True)
        return True

    # --- reading --------------------------------------------------------------------------------------
    def path_of(self, class_name: str, sha256: str, suffix: str) -> Path:
        return self.root / class_name / f"{sha256}{suffix}"

    def file_of(self, session: Session, sha256: str) -> tuple[Path, Upload] | None:
        row = session.get(Upload, sha256)
        if row is None:
            return None
        path = self.path_of(row.class_name, row.sha256, row.suffix)
        return (path, row) if path.is_file() else None

    def base_hashes(self) -> Mapping[str, str]:
        """sha256 -> class folder ("cats" | "dogs") of every file of the base training set.

        Read once, again when the folder changes; a content under both classes maps to "cats"
        (the first by path, as training's Split.unique() keeps it).
        """
        return self._hashes_of(self.base_train_dir)

    def test_hashes(self) -> Mapping[str, str]:
        """sha256 -> class folder of every file of the test split (read once, again when the folder changes)."""
        return self._hashes_of(self.test_dir)

    def _hashes_of(self, folder: Path | None) -> Mapping[str, str]:
        if folder is None or not all((folder / name).is_dir() for name in CLASS_DIRS):
            return _EMPTY
        known = self._hashes.get(folder)
        if known is not None and time.monotonic() - self._checked[folder] < RESCAN_AFTER_S:
            return known[1]
        stamp = folder_stamp(folder)  # a listing and a stat per file: not for every file of an upload
        self._checked[folder] = time.monotonic()
        if known is None or known[0] != stamp:
            known = (stamp, MappingProxyType(_hash_files(folder)))
            self._hashes[folder] = known
        return known[1]


def list_uploads(
    session: Session, class_name: str | None, limit: int, offset: int, quarantined: bool | None = None
) -> tuple[list[Upload], int]:
    """(rows newest first, total matching); quarantined: only those in (True) or out of (False) quarantine."""
    query = select(Upload)
    count = select(func.count()).select_from(Upload)
    if class_name is not None:
        query = query.where(Upload.class_name == check_class(class_name))
        count = count.where(Upload.class_name == class_name)
    if quarantined is not None:
        query = query.where(Upload.quarantined.is_(quarantined))
        count = count.where(Upload.quarantined.is_(quarantined))
    rows = session.scalars(query.order_by(Upload.created_at.desc(), Upload.sha256).limit(limit).offset(offset))
    return list(rows), int(session.scalar(count) or 0)


def upload_counts(session: Session) -> dict[str, int]:
    """{cats, dogs, total} of recorded uploads."""
    rows = dict(session.execute(select(Upload.class_name, func.count()).group_by(Upload.class_name)).all())
    counts = {name: int(rows.get(name, 0)) for name in CLASS_DIRS}
    return counts | {"total": sum(counts.values())}


def quarantine_counts(session: Session) -> dict[str, int]:
    """{quarantined, kept}: uploads the last label check left out, and uploads an admin keeps anyway."""
    quarantined = session.scalar(select(func.count()).select_from(Upload).where(Upload.quarantined.is_(True)))
    kept = session.scalar(select(func.count()).select_from(Upload).where(Upload.kept_by_admin.is_(True)))
    return {"quarantined": int(quarantined or 0), "kept": int(kept or 0)}


def keep_upload(session: Session, sha256: str) -> Upload | None:
    """An admin keeps an upload: out of quarantine, trained on, never quarantined again; None when unknown."""
    row = session.get(Upload, sha256)
    if row is None:
        return None
    row.kept_by_admin, row.quarantined = True, False
    session.commit()
    return row


def upload_dict(row: Upload) -> dict[str, Any]:
    """The API's view of one upload, with the served model's verdict at upload time and the label check's."""
    agrees = None if row.predicted_class is None else CLASS_NAMES[CLASS_DIRS[row.class_name]] == row.predicted_class
    return {
        "sha256": row.sha256,
        "class": row.class_name,
        "filename": row.filename,
        "bytes": row.bytes,
        "width": row.width,
        "height": row.height,
        "source": row.source,
        "created_at": iso_utc_or_none(row.created_at),
        "url": f"/api/uploads/{row.sha256}/image",
        "predicted_class": row.predicted_class,  # the served model's class when it was uploaded
        "p_label": row.p_label,  # the served model's P(the class it was uploaded as)
        "label_agrees": agrees,
        "quarantined": bool(row.quarantined),  # True: the last label check left it out of training
        "quarantine_reason": row.quarantine_reason,
        "label_p": row.label_p,  # the last label check's out-of-sample P(its class)
        "checked_at": iso_utc_or_none(row.checked_at),
        "kept_by_admin": bool(row.kept_by_admin),
    }


def _storable(data: bytes) -> tuple[bytes, str]:
    """(bytes to keep, suffix): the original where training reads its format, else a lossless PNG.

    The format comes from the magic bytes, never from Pillow's own opener, which refuses files the
    decoding path reads (a PNG whose text chunks exceed Pillow's limit).
    """
    suffix = SUFFIXES.get(image_kind(data) or "")
    if suffix is not None and suffix in IMAGE_SUFFIXES:
        return data, suffix
    return png_bytes(data), ".png"


def png_bytes(data: bytes) -> bytes:
    """The image as a PNG, through the one decoding path (upright 8-bit RGB)."""
    buffer = io.BytesIO()
    open_image(data).save(buffer, format="PNG")
    return buffer.getvalue()


def _display_name(filename: str | None) -> str | None:
    """The last path part of the client's name, at most 255 characters (it is never used as a path)."""
    if not filename:
        return None
    return filename.replace("\\", "/").rsplit("/", 1)[-1][:255] or None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with open(part, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _hash_files(base: Path) -> dict[str, str]:
    """sha256 -> class folder; the first by (class folder, path) wins, as training's Split.unique() keeps."""
    hashes: dict[str, str] = {}
    for name in CLASS_DIRS:
        for path in sorted((base / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                hashes.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), name)
    return hashes


_EMPTY: Mapping[str, str] = MappingProxyType({})
