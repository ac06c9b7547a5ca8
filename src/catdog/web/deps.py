"""Dependencies routes declare as parameters (Annotated aliases), never reaching for globals."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from pydantic import BeforeValidator
from sqlalchemy.orm import Session

from catdog.jobs.queue import JobQueue, make_queue
from catdog.registry import Registry  # MLflow itself is imported when a Registry is made
from catdog.settings import Settings
from catdog.uploads import UploadStore
from catdog.web.auth import require_admin
from catdog.web.service import ModelService


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _session(request: Request) -> Iterator[Session]:
    """One database session per request, closed afterwards."""
    with request.app.state.sessions() as session:
        yield session


def _uploads(request: Request) -> UploadStore:
    store: UploadStore = request.app.state.uploads
    return store


def _queue(request: Request) -> JobQueue:
    """The job queue, made on first use (Huey's storage connects lazily)."""
    queue: JobQueue = _made_once(request, "queue", make_queue)
    return queue


def _registry(request: Request) -> Registry:
    """The MLflow model registry, made on first use (importing MLflow takes seconds)."""
    registry: Registry = _made_once(request, "registry", Registry)
    return registry


_making = threading.Lock()


def _made_once(request: Request, name: str, make: Callable[[Settings], Any]) -> Any:
    """app.state.<name>, made from the settings by the first request that needs it."""
    state = request.app.state
    with _making:
        if getattr(state, name, None) is None:
            setattr(state, name, make(state.settings))
    return getattr(state, name)


ServiceDep = Annotated[ModelService, Depends(_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]
UploadsDep = Annotated[UploadStore, Depends(_uploads)]
QueueDep = Annotated[JobQueue, Depends(_queue)]
RegistryDep = Annotated[Registry, Depends(_registry)]
AdminDep = Depends(require_admin)  # routes list it in dependencies=[AdminDep]

INT64_MAX = 2**63 - 1  # the largest integer SQLite, PostgreSQL (bigint) and MLflow's store hold


def _decimal_digits(value: Any) -> Any:
    """Let through only plain ASCII decimal digits ("12"), never "+2", "2_0", "1.0", " 3" or "-1".

    Pydantic's lax int parsing takes all of these; a path or query integer here is a count or a
    version number, written one way. Raises ValueError (FastAPI answers 422) for anything else.
    """
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written with the digits 0-9 only (no sign, point or underscore)")
    return value


StrictDigits = BeforeValidator(_decimal_digits)
"""The strict-integer marker for every integer from a path or a query string: put it AFTER Query()/Path(),
`Annotated[int, Query(ge=0, le=INT64_MAX), StrictDigits]` (in that order the bounds reach the OpenAPI
schema as minimum/maximum). Give every such integer an upper bound (at most INT64_MAX): past it the
database cannot hold it, and 422 says so instead of a 500."""


def _version_number(
    version: Annotated[int, Path(ge=0, description="a registered model version (digits 0-9 only)"), StrictDigits],
) -> int:
    """A version from the path: 422 unless plain digits; 404 past INT64_MAX (no store holds such a version)."""
    if version > INT64_MAX:
        raise HTTPException(404, f"no model version {version}: there is no version past {INT64_MAX}")
    return version


VersionPath = Annotated[int, Depends(_version_number)]  # `{version}` in a route's path, strictly parsed
