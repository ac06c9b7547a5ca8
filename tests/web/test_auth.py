"""The admin token: generated once into the state folder (mode 600), from the setting, refused in production."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from catdog.settings import Settings, SettingsError
from catdog.web.auth import resolve_admin_token


def test_the_first_start_generates_a_private_token_and_later_starts_reuse_it(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    token, created = resolve_admin_token(settings)
    assert created and len(token) >= 40
    assert stat.S_IMODE(settings.admin_token_file.stat().st_mode) == 0o600
    assert resolve_admin_token(settings) == (token, False)


def test_the_setting_wins_and_production_needs_it(tmp_path: Path) -> None:
    assert resolve_admin_token(Settings(state_dir=tmp_path, admin_token="s3cret")) == ("s3cret", False)
    assert not (tmp_path / "admin_token").exists()
    with pytest.raises(SettingsError, match="CATDOG_ADMIN_TOKEN"):
        resolve_admin_token(Settings(state_dir=tmp_path, mode="production"))
