"""Per-client rate limits (the `limits` library) and the client address they are keyed on.

The address is the connection's peer as the ASGI scope holds it. Behind a trusted proxy that is
already the original client: catdog.web.app wraps the app in uvicorn's ProxyHeadersMiddleware,
which replaces the peer by the address in `X-Forwarded-For` only when the peer is one of
CATDOG_TRUSTED_PROXIES (addresses or CIDR networks, "*" for any).

Counts live in the process (limits' memory storage), or in Redis when the platform's job queue
is Redis (CATDOG_QUEUE_URL=redis://...), so that every replica and uvicorn worker shares them.
With the memory storage each server process counts alone: N workers admit up to N times the limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from catdog.settings import Settings
from catdog.web.state import app_state

log = logging.getLogger(__name__)

REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "unix": "redis+unix"}  # queue URL scheme -> limits'
REDIS_TIMEOUT_S = 1.0  # a rate limit must not hold a request up for long when Redis is slow or gone
UNKNOWN_CLIENT = "unknown"  # a peer the server was not told (a Unix socket)
WARN_EVERY_S = 60.0


def client_address(request: Request) -> str:
    """The client's address (proxy-aware, see the module docstring), at most 64 characters."""
    return (request.client.host if request.client and request.client.host else UNKNOWN_CLIENT)[:64]


class RateLimit:
    """A moving-window limit per client, such as "30/minute" or "5/second;100/hour" (every part applies).

    Moving window (limits' MovingWindowRateLimiter): a client has at most `amount` hits in any
    interval of the limit's length, and Retry-After is exact: when its oldest hit in the window
    leaves it. A storage error (Redis unreachable) lets the request through and logs a warning:
    the limit is a brake on floods, and live accuracy already counts each picture once.
    """

    def __init__(self, scope: str, limits: str, storage: Storage | None = None) -> None:
        """scope: the name keys are made in ("feedback"); limits: the `limits` notation, "" = no limit.

        Raises ValueError for a notation `limits` cannot parse.
        """
        self.scope = scope
        self.items: list[RateLimitItem] = parse_many(limits) if limits.strip() else []
        self.limiter = MovingWindowRateLimiter(storage or MemoryStorage())
        self._warned = -math.inf  # time.monotonic() of the last storage warning

    def retry_after(self, client: str) -> int | None:
        """Count one request of the client: None when it is within every limit, else the seconds until it is."""
        for item in self.items:
            try:
                if self.limiter.hit(item, self.scope, client):
                    continue
                reset = self.limiter.get_window_stats(item, self.scope, client).reset_time
            except StorageError as exc:
                if time.monotonic() - self._warned > WARN_EVERY_S:  # one line a minute, not one per request
                    self._warned = time.monotonic()
                    log.warning("rate limit %s not applied: its storage failed (%s)", self.scope, exc)
                return None
            return max(1, math.ceil(reset - time.time()))
        return None

    def check(self, client: str) -> None:
        """Raises HTTPException 429 with a Retry-After header (seconds) when the client is over the limit."""
        wait = self.retry_after(client)
        if wait is not None:
            raise HTTPException(
                429,
                f"too many {self.scope} requests from {client}: at most {self.describe()}; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def describe(self) -> str:
        """The limits in words, e.g. "30 per 1 minute"."""
        return " and ".join(str(item) for item in self.items) or "no limit"


def limit_storage(settings: Settings) -> Storage:
    """Redis when the job queue is Redis (shared by replicas), else this process's memory."""
    url = settings.queue_url or ""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in REDIS_SCHEMES:
        return RedisStorage(
            f"{REDIS_SCHEMES[scheme]}://{rest}",
            wrap_exceptions=True,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
    return MemoryStorage()


def feedback_limit(settings: Settings) -> RateLimit:
    """The limit on POST /api/feedback per client (CATDOG_FEEDBACK_RATE_LIMIT)."""
    return RateLimit("feedback", settings.feedback_rate_limit, limit_storage(settings))


def limited(name: str) -> Callable[[Request], str]:
    """A dependency that counts the request against AppState.<name> (a RateLimit) and gives the client address.

    FastAPI solves it before it validates the body's fields, so a refused request costs nothing else.
    """

    def dependency(request: Request) -> str:
        client = client_address(request)
        limit: RateLimit | None = getattr(app_state(request.app), name, None)
        if limit is not None:
            limit.check(client)
        return client

    return dependency


FeedbackClient = Annotated[str, Depends(limited("feedback_limit"))]
