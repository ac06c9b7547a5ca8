"""What /openapi.json says about errors: one error model, the status codes each route can answer.

Routes declare `responses=error_responses(401, 403, 409)`; every such answer is JSON
`{"detail": str}` (catdog.web.errors). FastAPI documents 422 by itself; install_openapi makes its
schema say what catdog really answers (`detail` a sentence, the list in `errors`). The security
scheme (HTTP bearer, the admin token) comes from catdog.web.auth.bearer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """The body of every 4xx/5xx answer."""

    detail: str = Field(description="what went wrong, in one sentence")


WHY = {
    400: "the request is understood but cannot be done (the detail says why)",
    401: "no admin token: send 'Authorization: Bearer TOKEN' (the WWW-Authenticate header says Bearer)",
    403: "the admin token is wrong",
    404: "no such resource",
    409: "conflicts with the current state (the detail says with what)",
    410: "the resource is no longer kept",
    413: "the request body, a file in it, or the number of files is over the limit",
    415: "the file is not an image this server can decode",
    429: "too many requests from this client address: wait for Retry-After seconds",
    503: "not ready, overloaded or a backing service is down: try again after Retry-After seconds",
}

RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}


def error_responses(*codes: int, **why: str) -> dict[int | str, dict[str, Any]]:
    """FastAPI's `responses=` for these status codes, each `{"detail": str}` (ErrorDetail).

    `why` overrides a description: error_responses(404, 409, e409="a job is already running").
    Raises KeyError for a code WHY does not describe and that `why` does not either.
    """
    answers: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "model": ErrorDetail,
            "description": why.get(f"e{code}") or WHY[code],
        }
        if code in (429, 503):
            entry["headers"] = RETRY_AFTER
        if code == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
        answers[code] = entry
    return answers


ADMIN = error_responses(401, 403)  # what every route behind the admin token can answer besides its own


# catdog.web.errors answers 422 as {"detail": "limit: ...", "errors": [{loc, msg, type}, ...]}
VALIDATION_ERROR_SCHEMA = {
    "title": "HTTPValidationError",
    "description": "a parameter or field is missing or malformed: the problems in one sentence, and one entry each",
    "type": "object",
    "required": ["detail", "errors"],
    "properties": {
        "detail": {"type": "string", "title": "Detail"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}, "title": "Errors"},
    },
}


def install_openapi(app: FastAPI, scheme: str = "AdminToken") -> None:
    """Make app.openapi() say what catdog really answers.

    - 422: `detail` a sentence and the list in `errors` (FastAPI's default says `detail` is a list);
    - every operation behind the admin token (FastAPI marks it with the `scheme` security
      requirement, from require_admin's HTTPBearer) documents 401 and 403, even where its route
      lists only its own codes.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's, cached in app.openapi_schema
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = VALIDATION_ERROR_SCHEMA
            _document_admin_errors(schema, scheme)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _document_admin_errors(schema: dict[str, Any], scheme: str) -> None:
    """Add 401/403 (ErrorDetail) to each operation that needs `scheme` and does not list them."""
    schemas = schema["components"]["schemas"]
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not any(scheme in requirement for requirement in operation.get("security", [])):
                continue
            for code in (401, 403):
                if str(code) not in operation["responses"]:
                    schemas.setdefault("ErrorDetail", ErrorDetail.model_json_schema())
                    entry = {k: v for k, v in error_responses(code)[code].items() if k != "model"}
                    entry["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
                    operation["responses"][str(code)] = entry
