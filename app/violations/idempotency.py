"""Idempotency-Key for creates: the same key and body from one agency within 24 h replays the response.

The key is claimed with `INSERT … ON CONFLICT DO NOTHING` before anything is created. On PostgreSQL a
concurrent request with the same key waits inside that INSERT until the first transaction commits (the
unique index makes it), then finds the committed row and replays it; if the first rolled back, it
claims the key itself. On SQLite the write lock already serialises the two. The row is completed with
the response in the same transaction that creates the record, so no one ever sees a half-done claim.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.errors import IdempotencyKeyReused
from app.violations.models import IdempotencyKey

REPLAY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str]
    violation_id: uuid.UUID | None


def request_hash(document: object) -> str:
    """Bodies are compared after validation, so key order, whitespace and spaces in a NIP don't matter."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(*, session: Session, agency: str, key: str, body_hash: str, now: datetime) -> StoredResponse | None:
    """None when this request now owns the key; the stored response when it is a replay; 422 when the
    key was used with a different body."""
    # A key older than the window is free again.
    session.execute(delete(IdempotencyKey).where(
        IdempotencyKey.agency == agency, IdempotencyKey.key == key,
        IdempotencyKey.created_at <= now - REPLAY_WINDOW,
    ))
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    claimed = session.execute(
        dialect.insert(IdempotencyKey)
        .values(agency=agency, key=key, request_hash=body_hash, created_at=now)
        .on_conflict_do_nothing(index_elements=["agency", "key"])
        .returning(IdempotencyKey.key)  # a row only when inserted (rowcount is unreliable through the ORM)
    ).first()
    if claimed is not None:
        return None
    row = session.execute(
        select(IdempotencyKey.request_hash, IdempotencyKey.response_status, IdempotencyKey.response_body,
               IdempotencyKey.response_headers, IdempotencyKey.violation_id)
        .where(IdempotencyKey.agency == agency, IdempotencyKey.key == key)
    ).one()
    if row.request_hash != body_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used within the last 24 hours with a different body; use a new key"
        )
    if row.response_status is None:  # claim and completion always commit together
        raise RuntimeError("idempotency key committed without its response")
    return StoredResponse(row.response_status, (row.response_body or "").encode(),
                          dict(row.response_headers or {}), row.violation_id)


def complete(*, session: Session, agency: str, key: str, response: StoredResponse) -> None:
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.agency == agency, IdempotencyKey.key == key)
        .values(response_status=response.status, response_body=response.body.decode(),
                response_headers=response.headers, violation_id=response.violation_id)
    )
