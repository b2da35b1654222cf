"""Auditor queries over the log: filtered pages, single events, verification and export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.audit.chain import VerifyResult, event_document, verify_documents
from app.audit.models import AuditEvent, AuditEventResource, ChainHead
from app.errors import NotFound
from app.pagination import decode_cursor, encode_cursor, malformed_cursor

_STREAM_CHUNK = 2000


def head(session: Session) -> tuple[int, str]:
    row = session.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1)).one()
    return row.seq, row.hash


def list_events(
    *,
    session: Session,
    agency: str | None = None,
    token_id: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    descending: bool = True,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of events, keyset on seq (which also orders them in time)."""
    stmt: Select[Any] = select(AuditEvent)
    if resource_id is not None:
        stmt = stmt.join(AuditEventResource, AuditEventResource.seq == AuditEvent.seq).where(
            AuditEventResource.resource_id == resource_id
        )
    for column, value in ((AuditEvent.actor_agency, agency), (AuditEvent.actor_token_id, token_id),
                          (AuditEvent.action, action), (AuditEvent.outcome, outcome)):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    if cursor is not None:
        (last_seq,) = decode_cursor(cursor, 1)
        if not isinstance(last_seq, int):
            raise malformed_cursor()
        stmt = stmt.where(AuditEvent.seq < last_seq if descending else AuditEvent.seq > last_seq)
    stmt = stmt.order_by(AuditEvent.seq.desc() if descending else AuditEvent.seq.asc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].seq)
    return [event_document(_as_mapping(r)) for r in rows], next_cursor


def _as_mapping(row: AuditEvent) -> dict[str, Any]:
    return {c: getattr(row, c) for c in AuditEvent.__table__.columns.keys()}


def get_event(*, session: Session, seq: int) -> dict[str, Any]:
    row = session.get(AuditEvent, seq)
    if row is None:
        raise NotFound(f"no audit event with seq {seq}")
    return event_document(_as_mapping(row))


def iter_documents(
    session: Session, *, from_seq: int = 1, to_seq: int | None = None,
    since: datetime | None = None, until: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Events in seq order, fetched in chunks by keyset so memory stays constant on any log size."""
    columns = AuditEvent.__table__.columns
    last = from_seq - 1
    while True:
        stmt = select(*columns).where(columns.seq > last)
        if to_seq is not None:
            stmt = stmt.where(columns.seq <= to_seq)
        if since is not None:
            stmt = stmt.where(columns.occurred_at >= since)
        if until is not None:
            stmt = stmt.where(columns.occurred_at < until)
        rows = session.execute(stmt.order_by(columns.seq).limit(_STREAM_CHUNK)).all()
        if not rows:
            return
        for row in rows:
            yield event_document(row)
        last = rows[-1].seq


def verify(session: Session, *, from_seq: int = 1, to_seq: int | None = None) -> VerifyResult:
    """Recompute every hash from the stored columns and check the links, gaps and the recorded head."""
    head_seq, _ = head(session)
    prev_hash = None
    if from_seq > 1:
        prev_hash = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == from_seq - 1))
    end = head_seq if to_seq is None else min(to_seq, head_seq)
    result = verify_documents(iter_documents(session, from_seq=from_seq, to_seq=end),
                              from_seq=from_seq, prev_hash=prev_hash)
    if result.ok and result.head_seq < end:
        # Events the head row says exist are gone from the end of the log.
        return VerifyResult(False, result.checked, result.head_seq, result.head_hash, result.head_seq + 1)
    return result


def check_checkpoint(session: Session, seq: int, expected_hash: str, *, verified_to: int) -> int | None:
    """With a verified chain up to `verified_to`, a checkpoint (seq, hash) holds when the log still
    reaches that seq and the event there has that hash. Returns the first bad seq, or None."""
    if verified_to < seq:
        return verified_to + 1  # cut off the end: the first missing seq
    stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == seq))
    # A mismatch means the chain was rewritten at or before `seq` after the checkpoint was signed; with
    # only this checkpoint the change cannot be pinned any earlier than its seq.
    return seq if stored != expected_hash else None
