"""Errors a user can act on. The CLI maps UsageProblem to exit 2 and other CatdogErrors to 1.

Each error also carries the HTTP status the API answers it with (`status_code`, as BentoML's
`error_code`): catdog.web.errors has one handler for CatdogError, so a route raises the error and
never translates it. 500, the default, means "not meant for the client": the API logs it and
answers the generic internal error without its text (which may name server paths).
"""

from __future__ import annotations

from typing import Any, ClassVar


class CatdogError(Exception):
    """Base of every error catdog raises on purpose.

    status_code: the HTTP status of the API's answer; a 4xx, 503 or 507 answers
    `{"detail": http_detail(), **http_extra()}` with `http_headers()`; 500 (the default) answers
    `{"detail": "internal error; ..."}` and logs the error.
    """

    status_code: ClassVar[int] = 500

    def http_detail(self) -> str:
        """The answer's `detail`: one line for the client (default: the error's text)."""
        return str(self)

    def http_extra(self) -> dict[str, Any]:
        """JSON fields of the answer beside `detail` (default: none), e.g. {"retry_after": 3.0}."""
        return {}

    def http_headers(self) -> dict[str, str] | None:
        """Headers of the answer (default: none), e.g. {"Retry-After": "5"}."""
        return None


class UsageProblem(CatdogError, ValueError):
    """Bad usage or unreadable input: the user can fix the call."""


class NotFound(CatdogError, KeyError):
    """No such thing (the API answers 404); a KeyError, so callers that catch KeyError still do.

    Its text is the message as given (a plain KeyError would show the repr of its argument).
    """

    status_code = 404

    def __str__(self) -> str:
        return Exception.__str__(self)


class Conflict(CatdogError):
    """The call conflicts with the current state (the API answers 409)."""

    status_code = 409
