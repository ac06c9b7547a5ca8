"""Every error leaves as JSON `{"detail": ...}` with the right status; never a plain-text 500.

One handler answers every catdog.errors.CatdogError with the status the error class carries
(`status_code`, plus its `http_extra()` fields and `http_headers()`): routes raise, never translate.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from catdog.errors import CatdogError
from catdog.web.disk import DISK_FULL_STATUS, DiskFull, disk_full_text, is_disk_full

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(CatdogError, _catdog_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A missing or misnamed form field: say which, in one sentence (the list stays in `errors`)."""
    errors = exc.errors()
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    detail = "; ".join(parts) or "invalid request"
    if any(e.get("type") == "missing" and "file" in str(e.get("loc", ())) for e in errors):
        if request.url.path.endswith("/upload-training-data"):
            detail += " (send the images as multipart/form-data, repeated field 'files')"
        else:
            detail += " (send the image as multipart/form-data field 'file'; for a batch, repeated field 'files')"
    return JSONResponse(
        {
            "detail": detail,
            "errors": [{"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in errors],
        },
        status_code=422,
    )


async def _catdog_error(request: Request, exc: CatdogError) -> JSONResponse:
    """`{"detail": ..., **exc.http_extra()}` with exc.status_code and exc.http_headers().

    500 (an error not meant for the client) goes to `_unexpected`: logged, its text withheld;
    507 (DiskFull) to `_disk_full`, which also notes the failed write for /api/status.
    """
    if exc.status_code == 500:
        return await _unexpected(request, exc)
    if exc.status_code == DISK_FULL_STATUS:
        return await _disk_full(request, exc)
    return JSONResponse(
        {"detail": exc.http_detail(), **exc.http_extra()}, status_code=exc.status_code, headers=exc.http_headers()
    )


async def _disk_full(request: Request, exc: Exception) -> JSONResponse:
    """507 Insufficient Storage: a write failed because the state folder's disk is full (catdog.web.disk)."""
    what = f"{request.method} {request.url.path}"
    detail = str(exc) if isinstance(exc, DiskFull) else disk_full_text(what)
    log.error("%s: %s (%s)", what, detail, exc.__cause__ or exc)
    state = getattr(request.app.state, "catdog", None)  # catdog.web.state.AppState (absent in a bare test app)
    watch = None if state is None else state.disk
    if watch is not None:
        watch.note(what, exc)
    return JSONResponse({"detail": detail}, status_code=DISK_FULL_STATUS)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # catdog.web.middleware.RequestContext calls this for a route's unhandled error, so the answer
    # carries X-Request-ID and Server-Timing and the log record the request id.
    if is_disk_full(exc):  # any route's write (a feedback, a database row): say so, never a bare 500
        return await _disk_full(request, exc)
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)
