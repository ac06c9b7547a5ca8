"""Dependencies routes declare as parameters (Annotated aliases), never reaching for globals."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
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
