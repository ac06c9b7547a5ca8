"""ASGI middleware: security headers, request ids, the access log, request metrics, the admin
token checked before any body is read, and the upload size cap.

Written as plain ASGI (not BaseHTTPMiddleware) so it adds microseconds, not a task per request.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, compile_path

from catdog.web import metrics
from catdog.web.auth import require_admin, token_problem
from catdog.web.logs import request_id
from catdog.web.problems import UploadTooLarge

log = logging.getLogger("catdog.access")
error_log = logging.getLogger("catdog.web.errors")

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
        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                took = f"app;dur={(time.perf_counter() - started) * 1000:.2f}".encode()  # W3C Server-Timing, ms
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode()),
                    (b"server-timing", took),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Handled here, not by Starlette's ServerErrorMiddleware (outside every middleware): so
            # the 500 carries X-Request-ID and Server-Timing, and its log record the request id.
            if status_sent:
                raise  # the answer is half sent: the server can only drop the connection
            await _answer_unexpected(scope, receive, send_with_id, exc)
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


async def _answer_unexpected(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer with the app's own handler for Exception (catdog.web.errors: logs it, 500 or 507 JSON).

    Without one (or when it fails too), log here and answer the plain 500 JSON.
    """
    handler = getattr(scope.get("app"), "exception_handlers", {}).get(Exception)
    if handler is not None:
        try:
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        except Exception:
            error_log.exception("the error handler failed on %s %s", scope["method"], scope["path"])
    error_log.exception("unexpected error on %s %s", scope["method"], scope["path"], exc_info=exc)
    await _json(send, 500, "internal error; the server log has the details")


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


# No inline script, style or event handler runs (the pages have none: one script file per page);
# images may be data: URLs (heat maps) and blob: URLs (previews of picked photos); nothing comes
# from another host, and no other site may frame a page (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Add SECURITY_HEADERS to every answer (pages, API, static files, errors) that lacks them.

    A route that needs another policy sets its own header (the /docs page allows Swagger UI's
    inline styles); the outermost middleware, so the answers of the others get them too.
    """

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[bytes, bytes]] = SECURITY_HEADERS) -> None:
        self.app = app
        self.headers = tuple(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.headers if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AdminFirst:
    """Answer 401/403 for an admin route before a byte of its body is read.

    FastAPI parses a request's body (a 140 MB upload, 10,000 files, malformed JSON) before any
    dependency runs, so require_admin alone answers only after all of that. This finds the route
    a request goes to as the router will (the first whose path and method match, in the app's
    order; route_table) and, when that route depends on require_admin (AdminDep; needs_admin),
    checks the token first. It sits outside the upload size cap, so a body over the cap gets the
    401 too, at once. The rest of an unread body is dropped by the server (uvicorn discards it
    and keeps the connection); a client that sent `Expect: 100-continue` never sends it at all.
    """

    def __init__(self, app: ASGIApp, routes: Callable[[], Sequence[BaseRoute]], token: Callable[[], str]) -> None:
        self.app = app
        self.routes = routes
        self.token = token
        self._table: list[RouteTarget] = []
        self._table_of = -1  # how many top-level routes the table was made from (routes added later: remade)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope) if scope["type"] == "http" else None
        if target is None or not target.admin:
            await self.app(scope, receive, send)
            return
        problem = token_problem(_header(scope, b"authorization"), self.token())
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, detail = problem
        scope["catdog.route"] = target.path  # answered before routing: label the metrics anyway
        await _json(send, status, detail, [(b"www-authenticate", b"Bearer")] if status == 401 else None)

    def _target(self, scope: Scope) -> RouteTarget | None:
        routes = self.routes()
        if len(routes) != self._table_of:
            self._table, self._table_of = route_table(routes), len(routes)
        return match_route(self._table, scope)


@dataclass(frozen=True)
class RouteTarget:
    """One route as AdminFirst matches it: a FastAPI route by its path regex and methods, others by matches()."""

    path: str
    admin: bool
    route: BaseRoute
    regex: re.Pattern[str] | None = None  # None: ask route.matches() (mounts, plain Starlette routes)
    methods: frozenset[str] | None = None


def route_table(routes: Sequence[BaseRoute]) -> list[RouteTarget]:
    """Every route of the app in the router's order, routes of included routers in place, with whether it is admin."""
    table = []
    for context in iter_route_contexts(routes):
        original = context.original_route
        if isinstance(original, APIRoute):
            path = context.path or original.path
            methods = frozenset(context.methods or original.methods or ())
            regex = compile_path(path)[0]
            table.append(RouteTarget(path, needs_admin(original), original, regex, methods or None))
        else:
            table.append(RouteTarget(str(getattr(original, "path", "")), False, original))
    return table


def match_route(table: Sequence[RouteTarget], scope: Scope) -> RouteTarget | None:
    """The first route whose path and method match (the router's choice); None when none does (404/405)."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    for target in table:
        if target.regex is None:
            if target.route.matches(scope)[0] is Match.FULL:
                return target
        elif target.regex.match(path) and (target.methods is None or scope["method"] in target.methods):
            return target
    return None


def needs_admin(route: BaseRoute) -> bool:
    """Whether `route` (a FastAPI APIRoute) depends on require_admin, directly or through a dependency."""
    dependant = getattr(route, "dependant", None)
    return dependant is not None and _depends_on(dependant, require_admin)


def _depends_on(dependant: Any, call: Callable[..., Any]) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


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
                raise UploadTooLarge(f"the request is over the limit of {_mib(limit)} here")
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
        except UploadTooLarge as exc:
            if not over:  # a route's own 413 (one file over its cap) is the app's to answer
                raise
            await _json(send, 413, str(exc))

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
