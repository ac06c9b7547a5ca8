from __future__ import annotations

from pathlib import Path

import pytest

from catdog.settings import get_settings


def test_settings_come_from_catdog_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CATDOG_PORT", "8123")
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CATDOG_FEATURES_DIR")
    settings = get_settings()
    assert settings.port == 8123
    assert settings.weights_dir == tmp_path / "weights"
    assert settings.features_dir == tmp_path / "features"
