"""Declared error responses, so the OpenAPI document says honestly what each route can answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.errors import PROBLEM_JSON

_TITLES = {
    304: "Not modified",
    400: "Bad request",
    401: "Missing, malformed, expired, revoked or forged token",
    403: "Token lacks the scope or role, or its agency is inactive",
    404: "Not found",
    409: "Conflict with the current state",
    412: "If-Match does not match the current version",
    413: "Body larger than SBT_MAX_BODY_BYTES",
    415: "Unsupported media type",
    422: "Validation error",
    428: "If-Match header required",
    429: "Rate limit exceeded",
    503: "Database or audit log unavailable, or a lock held elsewhere past SBT_DB_LOCK_TIMEOUT_SECONDS",
}


class FieldProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="forbid")

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str
    errors: list[FieldProblem] | None = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the given problem statuses plus the 503 every /v1 route can give.

    A route that can answer 413 takes a body, so it can also answer 415 (a body that is not JSON).
    """
    out: dict[int | str, dict[str, Any]] = {}
    implied = {415} if 413 in statuses else set()
    for status in sorted({*statuses, *implied, 503}):
        out[status] = {"description": _TITLES[status], "model": Problem, "content": {PROBLEM_JSON: {}}}
    return out
