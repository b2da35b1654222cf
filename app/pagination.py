"""Opaque keyset cursors: the sort key of the last item seen, never an offset."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import Query

from app.errors import ValidationFailed

Limit = Annotated[int, Query(ge=1, le=200, description="Page size (1-200).")]
Cursor = Annotated[str | None, Query(max_length=512, description="Opaque cursor from `next_cursor`.")]


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """Return the key values, or raise 422 naming `cursor` when it is not one this service made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != arity:
        raise malformed_cursor()
    return values


def malformed_cursor() -> ValidationFailed:
    return ValidationFailed(
        "malformed cursor", errors=[{"loc": ["query", "cursor"], "msg": "not a cursor from this service"}]
    )
