"""The one settings object: every value comes from a CATDOG_* environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Settings:
    """Where catdog keeps things and how it runs, from the environment (get_settings reads it anew)."""

    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "catdog")
    data_dir: Path = PROJECT_ROOT / "data"
    models_dir: Path = PROJECT_ROOT / "models"
    default_model: str = "vgg16"
    port: int = 8000
    threads: int = 0  # 0 lets ONNX Runtime use every core
    features_override: Path | None = None

    @classmethod
    def from_env(cls) -> Settings:
        base = cls()
        return cls(
            cache_dir=_env_path("CATDOG_CACHE_DIR", base.cache_dir),
            data_dir=_env_path("CATDOG_DATA_DIR", base.data_dir),
            models_dir=_env_path("CATDOG_MODELS_DIR", base.models_dir),
            default_model=os.environ.get("CATDOG_DEFAULT_MODEL", base.default_model),
            port=int(os.environ.get("CATDOG_PORT", base.port)),
            threads=int(os.environ.get("CATDOG_THREADS", base.threads)),
            features_override=_env_path("CATDOG_FEATURES_DIR", Path())
            if os.environ.get("CATDOG_FEATURES_DIR")
            else None,
        )

    @property
    def weights_dir(self) -> Path:
        return self.cache_dir / "weights"

    @property
    def features_dir(self) -> Path:
        return self.features_override or self.cache_dir / "features"


def get_settings() -> Settings:
    return Settings.from_env()
