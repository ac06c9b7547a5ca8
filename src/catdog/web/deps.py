"""Dependencies routes declare as parameters (Annotated aliases), never reaching for globals.

Each reads the app's one typed state (catdog.web.state.AppState); no route reads `app.state` itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from pydantic import BeforeValidator
from sqlalchemy.orm import Session

from catdog.jobs.queue import JobQueue, make_queue
from catdog.registry import Registry  # imports MLflow; a Registry (its store) is made on first use
from catdog.settings import Settings
from catdog.uploads import UploadStore
from catdog.web.auth import require_admin
from catdog.web.disk import DiskWatch
from catdog.web.monitor import DriftMonitor
from catdog.web.service import ModelService
from catdog.web.state import AppState, app_state


class NotStarted(RuntimeError):
    """The app's lifespan has not run (a TestClient used without `with`): no service, no database yet (500)."""


def _service(request: Request) -> ModelService:
    service = app_state(request.app).service
    if service is None:
        raise NotStarted("the model service is made when the app starts (its lifespan)")
    return service


def _maybe_service(request: Request) -> ModelService | None:
    """The model service, or None before the app has started or in an app of pages alone (they render without it)."""
    state: AppState | None = getattr(request.app.state, "catdog", None)
    return None if state is None else state.service


def _settings(request: Request) -> Settings:
    return app_state(request.app).settings


def _session(request: Request) -> Iterator[Session]:
    """One database session per request, closed afterwards."""
    sessions = app_state(request.app).sessions
    if sessions is None:
        raise NotStarted("the database is opened when the app starts (its lifespan)")
    with sessions() as session:
        yield session


def _uploads(request: Request) -> UploadStore:
    return app_state(request.app).uploads


def _disk(request: Request) -> DiskWatch:
    return app_state(request.app).disk


def _monitor(request: Request) -> DriftMonitor | None:
    """The drift monitor, None before the app has started."""
    return app_state(request.app).monitor


_making = threading.Lock()


def _queue(request: Request) -> JobQueue:
    """The job queue, made on first use (Huey's storage connects lazily)."""
    state = app_state(request.app)
    with _making:
        if state.queue is None:
            state.queue = make_queue(state.settings)
        return state.queue


def _registry(request: Request) -> Registry:
    """The MLflow model registry, made on first use (importing MLflow takes seconds)."""
    state = app_state(request.app)
    with _making:
        if state.registry is None:
            state.registry = Registry(state.settings)
        return state.registry


def _known_registry(request: Request) -> Registry | None:
    """The registry if this app has one already, else None (never made here: a pinned model needs none)."""
    return app_state(request.app).registry


ServiceDep = Annotated[ModelService, Depends(_service)]
MaybeServiceDep = Annotated[ModelService | None, Depends(_maybe_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]
UploadsDep = Annotated[UploadStore, Depends(_uploads)]
DiskDep = Annotated[DiskWatch, Depends(_disk)]
MonitorDep = Annotated[DriftMonitor | None, Depends(_monitor)]
QueueDep = Annotated[JobQueue, Depends(_queue)]
RegistryDep = Annotated[Registry, Depends(_registry)]
KnownRegistryDep = Annotated[Registry | None, Depends(_known_registry)]
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
