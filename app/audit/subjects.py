"""The data subject's processing trail (UU 27/2022): every event that touched a record about one NIP."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from app.audit.chain import event_document
from app.audit.models import AuditEvent, AuditEventResource
from app.pagination import decode_int_cursor, split_page
from app.violations.models import ViolationVersion

_BRANCHES = 64


def records_about(session: Session, nip: str) -> list[str]:
    """Ids of every record whose subject had this NIP at any version (a corrected NIP still counts)."""
    ids = session.scalars(
        select(ViolationVersion.violation_id).where(ViolationVersion.subject_nip == nip).distinct()
    )
    return sorted(str(record_id) for record_id in ids)


def subject_trail(
    *, session: Session, record_ids: list[str], limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Events naming any of the records, oldest first, keyset on seq through the resource index.

    Each record's next page of seqs is read off the (resource_id, seq) primary key on its own and the
    pages are merged, so a subject with a much-read record costs a page per record, not every event that
    ever named it. (Past `_BRANCHES` records, one IN query instead: SQLite caps a UNION at 500 terms.)
    """
    last_seq = decode_int_cursor(cursor) or 0
    if not record_ids:
        return [], None
    linked = AuditEventResource
    if len(record_ids) <= _BRANCHES:
        pages = [select(linked.seq).where(linked.resource_id == record_id, linked.seq > last_seq)
                 .order_by(linked.seq).limit(limit + 1).subquery() for record_id in record_ids]
        merged = union(*(select(page.c.seq) for page in pages)).subquery()
        touching = select(merged.c.seq).order_by(merged.c.seq).limit(limit + 1).subquery()
    else:
        touching = (select(linked.seq).where(linked.resource_id.in_(record_ids), linked.seq > last_seq)
                    .distinct().order_by(linked.seq).limit(limit + 1).subquery())
    stmt = select(AuditEvent).join(touching, touching.c.seq == AuditEvent.seq).order_by(AuditEvent.seq)
    rows, next_cursor = split_page(list(session.scalars(stmt)), limit, lambda r: (r.seq,))
    columns = AuditEvent.__table__.columns.keys()
    return [event_document({c: getattr(r, c) for c in columns}) for r in rows], next_cursor
