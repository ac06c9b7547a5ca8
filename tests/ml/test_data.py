from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from catdog.ml.data import DataError, describe, load_split, resolve_split

from ..conftest import CATSDOGS, FIXTURES


def test_load_split_counts_each_class() -> None:
    split = load_split(CATSDOGS / "train")
    assert split.counts() == {"cat": 16, "dog": 16}
    assert split.skipped == []
    assert {s.label for s in split.samples if s.path.parent.name == "dogs"} == {1}


def test_corrupt_and_non_image_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = Path(shutil.copytree(CATSDOGS / "test", tmp_path / "split"))
    for bad in (FIXTURES / "bad").iterdir():
        shutil.copy(bad, root / "cats" / bad.name)
    split = load_split(root)
    assert split.counts() == {"cat": 6, "dog": 6}
    assert sorted(p.name for p, _ in split.skipped) == ["empty.jpg", "notes.txt", "truncated.jpg"]
    assert split.report()["skipped"] == 3


def test_byte_identical_duplicates_are_reported_and_deduplicated(tmp_path: Path) -> None:
    root = Path(shutil.copytree(CATSDOGS / "test", tmp_path / "split"))
    original = next((root / "dogs").iterdir())
    shutil.copy(original, root / "dogs" / f"{original.stem}(1).jpg")
    split = load_split(root)
    assert len(split.duplicate_groups()) == 1
    assert len(split.unique()) == len(split.samples) - 1
    assert split.report()["duplicate_files"] == 1


def test_fingerprint_depends_on_content_and_labels_not_paths(tmp_path: Path) -> None:
    a = load_split(CATSDOGS / "test").fingerprint()
    moved = Path(shutil.copytree(CATSDOGS / "test", tmp_path / "elsewhere"))
    assert load_split(moved).fingerprint() == a
    cat = next((moved / "cats").iterdir())
    cat.rename(moved / "dogs" / cat.name)
    assert load_split(moved).fingerprint() != a


def test_resolve_split_accepts_both_layouts() -> None:
    assert resolve_split(CATSDOGS, "test") == CATSDOGS / "test"
    assert resolve_split(CATSDOGS / "test", "test") == CATSDOGS / "test"


def test_folders_without_classes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        resolve_split(tmp_path, "train")
    with pytest.raises(DataError):
        load_split(tmp_path)


def test_describe_reports_every_split() -> None:
    report = describe(CATSDOGS)
    assert set(report) == {"train", "test"}
    assert report["test"]["n"] == 12  # type: ignore[index]
    assert report["train"]["width"]["max"] <= 128  # type: ignore[index]


def test_pictures_serving_reads_are_never_skipped_in_training(tmp_path: Path) -> None:
    """HEIC, and a PNG whose metadata is over Pillow's limit, count as images (the one decoding path)."""
    from ..fixtures import make_odd_fixtures as odd

    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
    shutil.copy(FIXTURES / "odd" / "cat.heic", tmp_path / "cats" / "phone.heic")
    plain = (CATSDOGS / "train" / "dogs" / "dog.1.jpg").read_bytes()
    png = odd.encode(Image.open(io.BytesIO(plain)), "PNG")
    (tmp_path / "dogs" / "workflow.png").write_bytes(odd.with_png_chunk(png, odd.big_ztxt()))
    split = load_split(tmp_path)
    assert split.skipped == [] and split.counts() == {"cat": 1, "dog": 1}
