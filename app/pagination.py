"""Opaque keyset cursors: the sort key of the last item seen, never an offset."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from app.errors import ValidationFailed

T = TypeVar("T")


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


def decode_int_cursor(cursor: str | None) -> int | None:
    """The single integer key of a cursor made by `encode_cursor(n)`; None when no cursor was given."""
    if cursor is None:
        return None
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, int) or isinstance(value, bool):
        raise malformed_cursor()
    return value


def split_page(rows: list[T], limit: int, key: Callable[[T], Sequence[Any]]) -> tuple[list[T], str | None]:
    """Rows fetched with LIMIT limit + 1: the page, and the cursor of its last row unless it is the last."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(*key(page[-1]))
