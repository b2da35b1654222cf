"""The data subject's processing trail (UU 27/2022): every event that touched a record about one NIP."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import event_document
from app.audit.models import AuditEvent, AuditEventResource
from app.pagination import decode_int_cursor, split_page
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
    last_seq = decode_int_cursor(cursor) or 0
    if not record_ids:
        return [], None
    touching = select(AuditEventResource.seq).where(AuditEventResource.resource_id.in_(record_ids))
    stmt = select(AuditEvent).where(AuditEvent.seq.in_(touching), AuditEvent.seq > last_seq)
    rows, next_cursor = split_page(
        list(session.scalars(stmt.order_by(AuditEvent.seq).limit(limit + 1))), limit, lambda r: (r.seq,)
    )
    columns = AuditEvent.__table__.columns.keys()
    return [event_document({c: getattr(r, c) for c in columns}) for r in rows], next_cursor
