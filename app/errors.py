"""Domain errors with stable codes, and their RFC 9457 problem+json rendering."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://sbt.go.id/problems/"


class AppError(Exception):
    """An error the client caused or may retry; rendered as problem+json, never with internals."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        code: str | None = None,
        title: str | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        super().__init__(self.detail)


class InvalidToken(AppError):
    status, code, title = 401, "invalid_token", "Invalid or missing token"

    def __init__(self, detail: str, *, missing: bool = False) -> None:
        # RFC 6750 3.1: no error attribute when the request carried no credentials at all.
        challenge = "Bearer" if missing else 'Bearer error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})
        self.missing = missing


class InsufficientScope(AppError):
    status, code, title = 403, "insufficient_scope", "Insufficient scope"


class AgencyInactive(AppError):
    status, code, title = 403, "agency_inactive", "Agency inactive"


class ActionNotPermitted(AppError):
    status, code, title = 403, "action_not_permitted", "Action not permitted"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(AppError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class InvalidTransition(AppError):
    status, code, title = 409, "invalid_transition", "Invalid transition"


class RecordFinal(AppError):
    status, code, title = 409, "record_final", "Record is final"


class PreconditionFailed(AppError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(AppError):
    status, code, title = 422, "validation_error", "Validation error"


class IdempotencyKeyReused(AppError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"


class PreconditionRequired(AppError):
    status, code, title = 428, "precondition_required", "Precondition required"


class RateLimited(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(AppError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


class LockTimeout(ServiceUnavailable):
    """A lock the request needed stayed held by another transaction past the lock timeout (503, same code
    as an outage: nothing was changed and the request can be repeated)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"a lock this request needs was held by another transaction for more than "
                         f"{seconds:g} s; nothing was changed; try again shortly")


class InternalError(AppError):
    status, code, title = 500, "internal_error", "Internal server error"


def problem_body(error: AppError, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "request_id": request_id,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    return body


def problem_response(error: AppError, request_id: str) -> Response:
    return Response(
        json.dumps(problem_body(error, request_id), ensure_ascii=False).encode(),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers,
    )
