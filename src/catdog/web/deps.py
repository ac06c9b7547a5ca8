"""Dependencies routes declare as parameters (Annotated aliases), never reaching for globals."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated

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
    state = request.app.state
    with _made_once:
        if getattr(state, "queue", None) is None:
            state.queue = make_queue(state.settings)
    queue: JobQueue = state.queue
    return queue


def _registry(request: Request) -> Registry:
    """The MLflow model registry, made on first use (importing MLflow takes seconds)."""
    state = request.app.state
    with _made_once:
        if getattr(state, "registry", None) is None:
            state.registry = Registry(state.settings)
    registry: Registry = state.registry
    return registry


_made_once = threading.Lock()

ServiceDep = Annotated[ModelService, Depends(_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]
UploadsDep = Annotated[UploadStore, Depends(_uploads)]
QueueDep = Annotated[JobQueue, Depends(_queue)]
RegistryDep = Annotated[Registry, Depends(_registry)]
AdminDep = Depends(require_admin)  # routes list it in dependencies=[AdminDep]
