"""The data subject's processing trail (UU 27/2022): every event that touched a record about one NIP."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import event_document
from app.audit.models import AuditEvent, AuditEventResource
from app.pagination import decode_cursor, encode_cursor, malformed_cursor
from app.violations.models import ViolationVersion


def records_about(session: Session, nip: str) -> list[str]:
    """Ids of every record whose subject had this NIP at any version (a corrected NIP still counts)."""
    ids = session.scalars(
        select(ViolationVersion.violation_id).where(ViolationVersion.subject_nip == nip).distinct()
    )
    return sorted(str(record_id) for record_id in ids)


def subject_trail(
    *, session: Session, record_ids: list[str], limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Events naming any of the records, oldest first, keyset on seq through the resource index."""
    last_seq = 0
    if cursor is not None:
        (last_seq,) = decode_cursor(cursor, 1)
        if not isinstance(last_seq, int) or isinstance(last_seq, bool):
            raise malformed_cursor()
    if not record_ids:
        return [], None
    touching = select(AuditEventResource.seq).where(AuditEventResource.resource_id.in_(record_ids))
    stmt = select(AuditEvent).where(AuditEvent.seq.in_(touching), AuditEvent.seq > last_seq)
    rows = list(session.scalars(stmt.order_by(AuditEvent.seq).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].seq)
    columns = AuditEvent.__table__.columns.keys()
    return [event_document({c: getattr(r, c) for c in columns}) for r in rows], next_cursor
