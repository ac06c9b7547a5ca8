"""The app factory: routes, middleware, error handlers, and the life cycle of the served model.

Start-up migrates the database, starts the batched prediction writer, and loads the model in
the background, so /health answers at once while /ready says 503 until the model is loaded
and every batch size is warmed up. Shutdown answers what is queued, then flushes every
prediction record to the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import catdog
from catdog.db.session import make_engine, migrate, session_factory
from catdog.db.writer import PredictionWriter
from catdog.lifecycle import follow_server
from catdog.settings import Settings, get_settings
from catdog.uploads import UploadStore
from catdog.web.auth import resolve_admin_token
from catdog.web.disk import DiskWatch
from catdog.web.errors import install_error_handlers
from catdog.web.logs import configure_logging
from catdog.web.middleware import AdminFirst, EarlyRefusal, RequestContext, SecurityHeaders, UploadSizeLimit
from catdog.web.model_source import ModelSource, PinnedSource, RegistrySource, production_model_dir
from catdog.web.monitor import DriftMonitor
from catdog.web.openapi import install_openapi
from catdog.web.ratelimit import feedback_limit
from catdog.web.routes import explain, feedback, models, monitoring, pages, predict, retrain, status, uploads
from catdog.web.service import ModelService
from catdog.web.state import AppState, app_state

if TYPE_CHECKING:
    from catdog.registry import Registry

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
BATCH_UPLOAD_FACTOR = 8  # a batch request may carry this many maximal files


def create_app(
    settings: Settings | None = None, model_dir: Path | None = None, *, configure_logs: bool = True
) -> FastAPI:
    """The catdog web application (uvicorn calls it as a factory: `catdog.web.app:create_app`)."""
    settings = settings or get_settings()
    if configure_logs:
        configure_logging(settings.log_level, settings.log_format)
    follow_server("uvicorn worker")  # with `catdog serve --workers N`: end with the server, even on SIGKILL
    app = FastAPI(
        title="catdog",
        version=catdog.__version__,
        summary="Cats vs dogs: batched predictions, Grad-CAM explanations, monitoring.",
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
    )
    admin_token, _ = resolve_admin_token(settings)
    first_dir, registry = _choose_model(settings, model_dir)
    state = AppState(
        settings=settings,
        admin_token=admin_token,
        uploads=UploadStore(settings.uploads_dir, settings.data_dir / "train", settings.data_dir / "test"),
        disk=DiskWatch(settings.state_dir),  # free space and failed writes, for /api/status
        feedback_limit=feedback_limit(settings),  # per client address (catdog.web.ratelimit)
        model_dir=first_dir,
        model_source=None if registry is None else RegistrySource(registry),
        registry=registry,  # else made on first use (catdog.web.deps), as the job queue is
    )
    app.state.catdog = state  # the one app state (catdog.web.state); routes read it through catdog.web.deps
    install_error_handlers(app)
    for module in (predict, explain, status, monitoring, uploads, retrain, models, feedback, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/docs", _swagger_ui, include_in_schema=False)
    install_openapi(app)
    app.add_middleware(EarlyRefusal, refusal=lambda: _refusal(state), paths=("/api/predict", "/api/predict/batch"))
    app.add_middleware(UploadSizeLimit, limit=_upload_limit(settings))
    # the admin token before any body is read (a 401 must not wait for a 140 MB upload to arrive)
    app.add_middleware(AdminFirst, routes=lambda: app.routes, token=lambda: state.admin_token)
    app.add_middleware(RequestContext)
    app.add_middleware(SecurityHeaders)  # on every answer, the 413/401/500 of the middleware inside included
    if settings.trusted_proxies.strip():  # outermost: everything inside sees the original client's address
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app


def _choose_model(settings: Settings, model_dir: Path | None) -> tuple[Path, Registry | None]:
    """(the model directory that serves first, the registry when its aliases say what serves).

    An explicit directory (argument, else CATDOG_PINNED_MODEL) serves as it is, with no registry;
    else production's directory (the default model's while no version has the alias).
    """
    pinned = model_dir or settings.pinned_model
    if pinned is not None:
        return Path(pinned), None
    from catdog.registry import Registry

    registry = Registry(settings)
    registry.bootstrap()  # a no-op once the shipped models are registered (catdog serve did it)
    return production_model_dir(registry) or settings.default_model_dir, registry


def _refusal(state: AppState) -> tuple[str, float] | None:
    return None if state.service is None else state.service.refusal()


def _upload_limit(settings: Settings) -> Callable[[str], int | None]:
    """Request body cap by path: one file plus its envelope, or a batch's worth; None elsewhere."""
    single = settings.max_upload_bytes + 64 * 1024  # the multipart envelope around one file
    batch = settings.max_upload_bytes * BATCH_UPLOAD_FACTOR

    def limit(path: str) -> int | None:
        if path == "/api/predict":
            return single
        if path.startswith("/api/"):
            return batch
        return None

    return limit


SWAGGER_UI_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>catdog API</title>
  <link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
  <link rel="icon" href="/static/vendor/swagger-ui/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="/openapi.json"></div>
  <script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
  <script src="/static/js/swagger-init.js?v={catdog.__version__}"></script>
</body>
</html>
"""


async def _swagger_ui() -> HTMLResponse:
    """Swagger UI from the project's own copy (FastAPI's default loads it from a CDN and starts it
    with an inline script, which the Content-Security-Policy forbids: static/js/swagger-init.js does)."""
    return HTMLResponse(SWAGGER_UI_PAGE)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app_state(app)
    settings = state.settings
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    sessions = state.sessions = session_factory(engine)
    writer = PredictionWriter(engine, flush_seconds=settings.db_flush_seconds)
    writer.start()
    # Which model serves: state.model_source when set (a RegistrySource), else the model directory.
    source: ModelSource = state.model_source or PinnedSource(state.model_dir)
    service = state.service = ModelService(settings, state.model_dir, writer, source=source)
    loading = asyncio.get_running_loop().run_in_executor(None, service.load)
    monitor = state.monitor = DriftMonitor(service, sessions, settings.drift_interval_seconds)
    monitor.start()
    try:
        yield
    finally:
        monitor.stop()
        await loading
        service.close()
        writer.close()
        engine.dispose()
        log.info("stopped; every prediction record is written")
