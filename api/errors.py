"""The API's one root exception and the stable JSON error shape.

Every error answer is ``{"error": {"code": str, "message": str, "field"?: str, "details"?: {}}}``;
validation errors name the offending field (dotted path for nested bodies).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from aiohttp import web

from core.errors import FleetError

log = logging.getLogger("api")


class ApiError(FleetError):
    """Root exception of the API package; carries an HTTP status and a stable code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                 status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details
        self.headers = headers or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON error object."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        if self.details:
            err["details"] = self.details
        return {"error": err}


class ApiConfigError(ApiError):
    """Settings that the API refuses to start with."""

    code = "config_error"


class ValidationError(ApiError):
    """A request parameter or body field is invalid (400); `field` names it."""

    status = 400
    code = "validation_error"


class Unauthorized(ApiError):  # noqa: N818 - HTTP status names
    """No or invalid credentials (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(ApiError):  # noqa: N818 - HTTP status names
    """Authenticated but not allowed (403)."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):  # noqa: N818 - HTTP status names
    """The resource does not exist in the caller's tenant (404)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):  # noqa: N818 - HTTP status names
    """Uniqueness or state conflict (409)."""

    status = 409
    code = "conflict"


class Locked(ApiError):  # noqa: N818 - HTTP status names
    """Account locked after repeated failed logins (423, AC-7)."""

    status = 423
    code = "account_locked"


class TooManyRequests(ApiError):  # noqa: N818 - HTTP status names
    """Rate limit exceeded (429) with Retry-After."""

    status = 429
    code = "rate_limited"


class Unprocessable(ApiError):  # noqa: N818 - HTTP status names
    """The request conforms to the OpenAPI document but breaks a rule a JSON Schema cannot
    state (from >= to, an invalid geometry, a reference to a row that does not exist);
    422, `field` names it. A request that violates the document is a 400 instead."""

    status = 422
    code = "unprocessable"


class Unavailable(ApiError):  # noqa: N818 - HTTP status names
    """A dependency (database, Redis) is unavailable (503)."""

    status = 503
    code = "unavailable"


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               422: "unprocessable",
               415: "unsupported_media_type", 429: "rate_limited"}


def error_response(err: ApiError) -> web.Response:
    """Render an ApiError as the stable JSON shape."""
    return web.Response(status=err.status, text=json.dumps(err.body()),
                        content_type="application/json", headers=err.headers)


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON error answer for a failure (ApiError, an aiohttp HTTP error, anything else);
    an aiohttp HTTP exception below 400 (a redirect) is raised again."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        # Keep the headers aiohttp chose: `Allow` on a 405 is required (RFC 9110 15.5.6).
        kept = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(ApiError(exc.reason or "error", status=exc.status,
                                       code=_HTTP_CODES.get(exc.status, "http_error"),
                                       headers=kept))
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError):
        # Safety net: the pipeline's input check and `read_json` refuse such text with the
        # field's name; text that reaches PostgreSQL by another way is still the client's,
        # not a 500.
        log.warning("unstorable text reached the database on %s %s", request.method,
                    request.path)
        return error_response(ApiError("a text value contains a character PostgreSQL cannot "
                                       "store (NUL)", status=400, code="validation_error"))
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(ApiError("internal server error"))
