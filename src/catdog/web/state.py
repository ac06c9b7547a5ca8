"""The app's one typed state: what `create_app` builds and its lifespan adds, in one `AppState`.

`create_app` stores it as `app.state.catdog`. Routes never read `app.state`: they declare the
dependencies of catdog.web.deps, which read this object; middleware and error handlers get it
with `app_state(request.app)`, tests and benches with `app_state(app)` (to serve from another
ModelSource, to change the settings of a running app).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the types only: importing the registry means importing MLflow (seconds)
    from sqlalchemy.orm import Session, sessionmaker
    from starlette.applications import Starlette

    from catdog.jobs.queue import JobQueue
    from catdog.registry import Registry
    from catdog.settings import Settings
    from catdog.uploads import UploadStore
    from catdog.web.disk import DiskWatch
    from catdog.web.model_source import ModelSource
    from catdog.web.monitor import DriftMonitor
    from catdog.web.ratelimit import RateLimit
    from catdog.web.service import ModelService


@dataclass(eq=False)
class AppState:
    """Everything one app (one worker process) shares between requests.

    Made by create_app: settings, admin_token, uploads, disk (free space and failed writes),
    feedback_limit (POST /api/feedback per client), model_dir (what serves first) and, when the
    registry says what serves, registry and model_source. Made by the lifespan: sessions (the
    database), service (the served models), monitor (drift). Made on first use (catdog.web.deps):
    queue, and registry when a pinned model serves. None until made.
    """

    settings: Settings
    admin_token: str
    uploads: UploadStore
    disk: DiskWatch
    feedback_limit: RateLimit | None
    model_dir: Path
    model_source: ModelSource | None = None  # what serves; None: model_dir alone (a PinnedSource)
    registry: Registry | None = None
    queue: JobQueue | None = None
    sessions: sessionmaker[Session] | None = None
    service: ModelService | None = None
    monitor: DriftMonitor | None = None


def app_state(app: Starlette) -> AppState:
    """The AppState that create_app stored in `app`. Raises AttributeError for an app create_app did not make."""
    state: AppState = app.state.catdog
    return state
