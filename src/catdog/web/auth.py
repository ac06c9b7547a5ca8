"""The admin token: who may upload, retrain, cancel, promote, roll back, delete and add feedback to training.

Predictions and read-only endpoints stay open. The token comes from CATDOG_ADMIN_TOKEN, else
from the state folder's `admin_token` file (mode 600), which the first start writes with a
random value (secrets.token_urlsafe, 32 bytes) and prints. Production mode refuses to start
without CATDOG_ADMIN_TOKEN. Requests compare tokens in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from catdog.settings import Settings, SettingsError
from catdog.web.state import app_state

MISSING_TOKEN = "this action needs the admin token: send 'Authorization: Bearer TOKEN'"
WRONG_TOKEN = "the admin token is wrong"
# OpenAPI's security scheme "AdminToken" (HTTP bearer): /docs shows an Authorize button, and every
# route that depends on require_admin is marked as needing it. auto_error=False: our own 401 below.
bearer = HTTPBearer(
    scheme_name="AdminToken",
    description="The admin token (CATDOG_ADMIN_TOKEN, or the state folder's admin_token file)",
    auto_error=False,
)


def resolve_admin_token(settings: Settings, *, create: bool = True) -> tuple[str, bool]:
    """(token, whether it was just generated). Raises SettingsError in production mode without a token."""
    if settings.admin_token:
        return settings.admin_token, False
    if settings.mode == "production":
        raise SettingsError("production mode needs CATDOG_ADMIN_TOKEN: set it to a long random secret")
    path = settings.admin_token_file
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token, False
    if not create:
        raise SettingsError(f"no admin token: set CATDOG_ADMIN_TOKEN or start `catdog serve` once ({path})")
    return _write_new_token(path), True


def _write_new_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    descriptor = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    try:
        os.link(part, path)  # never replaces a token another process wrote first
    except FileExistsError:
        token = path.read_text().strip()
    finally:
        part.unlink(missing_ok=True)
    return token


def token_problem(authorization: str | None, expected: str) -> tuple[int, str] | None:
    """None when `authorization` is "Bearer <expected>"; else (401, why) without a token, (403, why) with a wrong one.

    Compares in constant time (hmac.compare_digest). Shared by require_admin and the AdminFirst
    middleware, which answers before a request's body is read.
    """
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, MISSING_TOKEN
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return 403, WRONG_TOKEN
    return None


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """401 without a Bearer token, 403 with a wrong one (the dependency of every admin route).

    The AdminFirst middleware makes the same check before the body is read; this one guards a
    route wherever it is mounted. `credentials` only marks the route in OpenAPI (the header is read here).
    """
    problem = token_problem(request.headers.get("authorization"), app_state(request.app).admin_token)
    if problem is not None:
        status, detail = problem
        raise HTTPException(status, detail, {"WWW-Authenticate": "Bearer"} if status == 401 else None)
