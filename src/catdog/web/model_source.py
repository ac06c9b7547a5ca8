"""Which model directory serves which alias: the answer the serving process polls.

`ModelService` asks a `ModelSource` every `registry_poll_seconds` which model serves as
`production` (always) and `staging` (the A/B challenger, optional), and swaps when the answer
changes. Two sources:

- `PinnedSource(model_dir)`: an explicit `--model` directory, production only, never changes
  (tests, `create_app(settings, model_dir)`, `catdog serve --model DIR`);
- `RegistrySource(registry)`: any object with `aliases() -> {"production": 3, ...}` (cheap,
  polled) and `local_model_dir(version) -> Path` (may download; asked once per version), such
  as `catdog.registry.Registry` (duck-typed: any such object serves).

`production_model_dir(registry)` is the one lookup of production's directory (the app factory and
`catdog serve` both ask it). The alias names are the registry's (catdog.registry.types).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from catdog.registry.types import ALIASES, PRODUCTION, STAGING

__all__ = [
    "ALIASES",
    "PRODUCTION",
    "STAGING",
    "ModelSource",
    "PinnedSource",
    "RegistryLike",
    "RegistrySource",
    "ServedModel",
    "production_model_dir",
]


@dataclass(frozen=True)
class ServedModel:
    """One alias's model: its registry version (None outside a registry) and local directory."""

    alias: str
    registry_version: int | None
    model_dir: Path

    def same_model(self, other: ServedModel | None) -> bool:
        """True when `other` names the same model (version and directory), whatever its alias."""
        return other is not None and (self.registry_version, self.model_dir) == (
            other.registry_version,
            other.model_dir,
        )


@runtime_checkable
class ModelSource(Protocol):
    """Answers which model serves which alias; polled, so `resolve` should be cheap."""

    def resolve(self) -> dict[str, ServedModel]:
        """{alias: ServedModel} for the aliases that exist ("production" at least, when any).

        Raises any exception when the answer cannot be had now (the caller keeps what it serves).
        """
        ...


class PinnedSource:
    """One fixed directory as production; no staging; never changes."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)

    def resolve(self) -> dict[str, ServedModel]:
        return {PRODUCTION: ServedModel(PRODUCTION, None, self.model_dir)}

    def __repr__(self) -> str:
        return f"PinnedSource({str(self.model_dir)!r})"


class RegistryLike(Protocol):
    """What `RegistrySource` needs of a model registry (catdog.registry.Registry has it)."""

    def aliases(self) -> Mapping[str, int]: ...

    def local_model_dir(self, version: int) -> Path: ...


def production_model_dir(registry: RegistryLike) -> Path | None:
    """The local directory of the version with the `production` alias; None when no version has it.

    Asks `aliases()` once, then `local_model_dir(version)` (which may download the version's files).
    Raises whatever the registry raises (catdog.registry.RegistryError when its store cannot be read).
    """
    production = registry.aliases().get(PRODUCTION)
    return None if production is None else Path(registry.local_model_dir(int(production)))


class RegistrySource:
    """The registry's `production` and `staging` aliases, each with its version's local directory.

    `local_model_dir` is asked once per version and remembered (a version's files never change),
    so a poll costs one `aliases()` call. Its errors propagate from `resolve`.
    """

    def __init__(self, registry: RegistryLike) -> None:
        self.registry = registry
        self._dirs: dict[int, Path] = {}
        self._lock = threading.Lock()

    def resolve(self) -> dict[str, ServedModel]:
        aliases = self.registry.aliases()
        return {
            alias: ServedModel(alias, int(aliases[alias]), self._model_dir(int(aliases[alias])))
            for alias in ALIASES
            if aliases.get(alias) is not None
        }

    def _model_dir(self, version: int) -> Path:
        with self._lock:
            if version not in self._dirs:
                self._dirs[version] = Path(self.registry.local_model_dir(version))
            return self._dirs[version]

    def __repr__(self) -> str:
        return f"RegistrySource({self.registry!r})"
