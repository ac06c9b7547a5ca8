"""Image folders as data sets: the spec's DIR/{train,test}/{cats,dogs} layout, or one split.

Scanning hashes every file's bytes (sha256): that is the feature-cache key, the duplicate
detector and the data fingerprint recorded in each model's config. Unreadable files are skipped
with a warning and counted, never a crash.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from catdog import CLASS_NAMES
from catdog.errors import UsageProblem
from catdog.ml.preprocessing import ImageDecodeError, open_image  # also registers the HEIF opener

log = logging.getLogger(__name__)

CLASS_DIRS = {"cats": 0, "dogs": 1}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".mpo"}


class DataError(UsageProblem):
    """The folder is not a data set this project understands."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 cat, 1 dog
    sha256: str
    width: int
    height: int

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


@dataclass
class Split:
    """One labelled set of images, with what was skipped while reading it."""

    root: Path
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def counts(self) -> dict[str, int]:
        counter = Counter(s.class_name for s in self.samples)
        return {name: counter.get(name, 0) for name in CLASS_NAMES}

    def duplicate_groups(self) -> list[list[Path]]:
        """Groups of byte-identical files (same sha256)."""
        groups: dict[str, list[Path]] = defaultdict(list)
        for sample in self.samples:
            groups[sample.sha256].append(sample.path)
        return [paths for paths in groups.values() if len(paths) > 1]

    def unique(self) -> list[Sample]:
        """One sample per distinct content (first by path); conflicting labels keep the first."""
        seen: dict[str, Sample] = {}
        for sample in sorted(self.samples, key=lambda s: str(s.path)):
            seen.setdefault(sample.sha256, sample)
        return list(seen.values())

    def fingerprint(self) -> str:
        """sha256 over the sorted (content hash, label) pairs: identifies the data, not the paths."""
        pairs = sorted(f"{s.sha256}:{s.label}" for s in self.samples)
        return hashlib.sha256("\n".join(pairs).encode()).hexdigest()

    def report(self) -> dict[str, object]:
        widths = [s.width for s in self.samples] or [0]
        heights = [s.height for s in self.samples] or [0]
        groups = self.duplicate_groups()
        return {
            "root": str(self.root),
            "n": len(self.samples),
            "counts": self.counts(),
            "width": {"min": min(widths), "max": max(widths), "mean": round(sum(widths) / len(widths), 1)},
            "height": {"min": min(heights), "max": max(heights), "mean": round(sum(heights) / len(heights), 1)},
            "duplicate_groups": len(groups),
            "duplicate_files": sum(len(g) - 1 for g in groups),
            "skipped": len(self.skipped),
            "skipped_files": [f"{p}: {why}" for p, why in self.skipped],
            "fingerprint": self.fingerprint(),
        }


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_sample(path: Path, label: int) -> Sample:
    """Hash and size one file; unreadable ones raise DataError.

    Pillow's header check is tried first (no pixels decoded); what it refuses gets the one
    decoding path's verdict, which accepts more (PNG metadata over Pillow's limit, JPEGs
    without an end marker), so training never skips a picture that serving would read.
    """
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.verify()  # structure check without decoding all pixels
    except Exception:  # Pillow raises many types for broken files
        try:
            width, height = open_image(data).size
        except ImageDecodeError as exc:
            raise DataError(str(exc)) from exc
    return Sample(path=path, label=label, sha256=sha256_bytes(data), width=width, height=height)


def load_split(root: Path) -> Split:
    """Read a folder holding cats/ and dogs/ directly."""
    root = Path(root)
    if not all((root / name).is_dir() for name in CLASS_DIRS):
        raise DataError(f"{root} does not hold cats/ and dogs/ folders")
    split = Split(root=root)
    for class_dir, label in CLASS_DIRS.items():
        for path in sorted((root / class_dir).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                split.skipped.append((path, "not an image file name"))
                continue
            try:
                split.samples.append(_read_sample(path, label))
            except (DataError, OSError) as exc:
                split.skipped.append((path, str(exc)))
    for path, why in split.skipped:
        log.warning("skipped %s: %s", path, why)
    return split


def resolve_split(root: Path, name: str) -> Path:
    """DIR/name if DIR has the spec's layout, else DIR itself when it holds cats/ and dogs/."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    if (root / name / "cats").is_dir():
        return root / name
    if (root / "cats").is_dir() and (root / "dogs").is_dir():
        return root
    raise DataError(f"{root} holds neither {name}/{{cats,dogs}} nor cats/ and dogs/")


def describe(root: Path) -> dict[str, object]:
    """Counts, sizes, duplicates and skipped files for every split found under root."""
    root = Path(root)
    names = [n for n in ("train", "test") if (root / n / "cats").is_dir()]
    if names:
        return {name: load_split(root / name).report() for name in names}
    return {"split": load_split(resolve_split(root, "train")).report()}


def describe_json(root: Path) -> str:
    return json.dumps(describe(root), indent=2)


def count_class_files(folder: Path) -> dict[str, int]:
    """{cats, dogs, total}: image files (by name) in folder/cats and folder/dogs, without reading them.

    A missing folder counts 0. Cheap enough for a status page: one directory listing per class.
    """
    counts: dict[str, int] = {}
    for class_dir in CLASS_DIRS:
        path = Path(folder) / class_dir
        try:
            counts[class_dir] = sum(
                1
                for entry in os.scandir(path)
                if entry.is_file()
                and not entry.name.startswith(".")
                and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
            )
        except OSError:
            counts[class_dir] = 0
    counts["total"] = counts["cats"] + counts["dogs"]
    return counts


def folder_stamp(root: Path) -> tuple[int, int]:
    """(files, newest modification ns) over root's cats/ and dogs/ (a missing one counts as empty).

    Changes when files are added, removed or replaced: a listing and a stat per file, no reading.
    """
    count, newest = 0, 0
    for name in CLASS_DIRS:
        try:
            with os.scandir(Path(root) / name) as entries:
                for entry in entries:
                    if entry.is_file():
                        count += 1
                        newest = max(newest, entry.stat().st_mtime_ns)
        except FileNotFoundError:
            continue
    return count, newest
