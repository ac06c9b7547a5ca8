"""ASGI middleware: request ids, the access log, request metrics, and the upload size cap.

Written as plain ASGI (not BaseHTTPMiddleware) so it adds microseconds, not a task per request.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from catdog.web import metrics
from catdog.web.logs import request_id

log = logging.getLogger("catdog.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    """Give every request an id (the client's X-Request-ID when sane), log it, count it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _client_request_id(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                took = f"app;dur={(time.perf_counter() - started) * 1000:.2f}".encode()  # W3C Server-Timing, ms
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode()),
                    (b"server-timing", took),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.REQUEST_SECONDS.labels(route, scope["method"]).observe(seconds)
            if not route.startswith("/static"):
                log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(seconds * 1000, 2),
                    },
                )
            request_id.reset(token)


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _CLIENT_ID.match(text) else None
    return None


def _route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label values), not the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None) or scope.get("catdog.route")
    if isinstance(path, str):
        return path
    return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"


class UploadSizeLimit:
    """Refuse a request body over `limit(path)` bytes with 413 JSON, after reading (and dropping) it.

    Reading the rest matters: an HTTP client that sends its whole body before it reads the
    answer would otherwise see a reset connection instead of the 413.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[str], int | None], drain_cap: int = 1 << 30) -> None:
        self.app = app
        self.limit = limit
        self.drain_cap = drain_cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            scope["catdog.route"] = scope["path"]  # answered before routing: label the metrics anyway
            await self._drain(receive, declared)
            await _json(send, 413, f"the request is {_mib(declared)}; the limit is {_mib(limit)} here")
            return
        received, over = 0, False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                over = True
                raise UploadTooLargeError(limit)
            return message

        async def send_413_instead(message: Message) -> None:
            # A chunked body (no Content-Length) ran over: whatever the app made of the error it
            # raised while parsing (FastAPI turns it into a 400), the client gets the 413.
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await _json(send, 413, f"the request is over the limit of {_mib(limit)} here")

        try:
            await self.app(scope, counting_receive, send_413_instead)
        except UploadTooLargeError:
            await _json(send, 413, f"the request is over the limit of {_mib(limit)} here")

    async def _drain(self, receive: Receive, declared: int) -> None:
        if declared <= self.drain_cap:
            await _drain(receive, self.drain_cap)


class EarlyRefusal:
    """Answer 503 before a prediction request's body is even parsed, when `refusal()` says so.

    refusal() -> None (let it through) or (detail, retry_after seconds). The route admits
    exactly again after parsing (a batch counts its files); this only spares a full server the
    work of parsing uploads it will refuse, so the 503 comes at once.
    """

    def __init__(self, app: ASGIApp, refusal: Callable[[], tuple[str, float] | None], paths: tuple[str, ...]) -> None:
        self.app = app
        self.refusal = refusal
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = None
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            refused = self.refusal()
        if refused is None:
            await self.app(scope, receive, send)
            return
        detail, retry_after = refused
        scope["catdog.route"] = scope["path"]  # answered before routing: label the metrics anyway
        await _drain(receive, cap=64 << 20)
        await _json(send, 503, detail, [(b"retry-after", str(int(retry_after)).encode())])


async def _drain(receive: Receive, cap: int) -> None:
    """Read and drop the request body (up to `cap` bytes) so the client reads our answer."""
    received = 0
    while received <= cap:
        message = await receive()
        received += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class UploadTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})
