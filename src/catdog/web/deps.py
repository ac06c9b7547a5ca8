"""Dependencies routes declare as parameters (Annotated aliases), never reaching for globals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from catdog.settings import Settings
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


ServiceDep = Annotated[ModelService, Depends(_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]
