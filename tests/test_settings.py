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


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("CATDOG_PORT", "eighty", "CATDOG_PORT"),
        ("CATDOG_PORT", "70000", "CATDOG_PORT"),
        ("CATDOG_PRECISION", "fp16", "CATDOG_PRECISION"),
        ("CATDOG_MAX_BATCH_SIZE", "0", "CATDOG_MAX_BATCH_SIZE"),
        ("CATDOG_WARMUP_BATCH_SIZES", "1,x", "CATDOG_WARMUP_BATCH_SIZES"),
        ("CATDOG_MAX_QUEUE_SIZE", "2", "CATDOG_MAX_QUEUE_SIZE"),
        ("CATDOG_MAX_BATCH_FILES", "100", "CATDOG_MAX_BATCH_FILES"),
        ("CATDOG_FEEDBACK_RATE_LIMIT", "often", "CATDOG_FEEDBACK_RATE_LIMIT"),
        ("CATDOG_TRUSTED_PROXIES", "nginx", "CATDOG_TRUSTED_PROXIES"),
        ("CATDOG_TRUSTED_PROXIES", "10.0.0.1/8", "CATDOG_TRUSTED_PROXIES"),
        ("CATDOG_FEEDBACK_RATE_LIMIT", "0/minute", "CATDOG_FEEDBACK_RATE_LIMIT"),
        ("CATDOG_GATE_REFERENCE", "1.0", "CATDOG_GATE_REFERENCE"),
        ("CATDOG_GATE_REFERENCE", "0", "CATDOG_GATE_REFERENCE"),
    ],
)
def test_a_bad_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str) -> None:
    from catdog.settings import SettingsError

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        get_settings()
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_the_cli_refuses_a_bad_setting_with_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    env = {"CATDOG_PORT": "eighty", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "catdog.cli", "predict", "x.jpg"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "CATDOG_PORT" in result.stderr


def test_warmup_sizes_default_to_every_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG_MAX_BATCH_SIZE", "4")
    assert get_settings().warmup_sizes() == [1, 2, 3, 4]
    monkeypatch.setenv("CATDOG_WARMUP_BATCH_SIZES", "1,64")
    assert get_settings().warmup_sizes() == [1, 4]


def test_the_database_defaults_to_sqlite_in_the_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CATDOG_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("CATDOG_DATABASE_URL", raising=False)
    assert get_settings().sqlalchemy_url == f"sqlite:///{tmp_path / 'catdog.sqlite'}"
