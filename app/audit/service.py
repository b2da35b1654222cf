"""Auditor queries over the log: filtered pages, single events, verification and export."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from app.audit.chain import EVENT_COLUMNS, VerifyResult, event_document, verify_documents
from app.audit.checkpoints import Checkpoint
from app.audit.models import GENESIS_HASH, AuditEvent, AuditEventResource, ChainHead
from app.audit.stream import EventStream
from app.errors import NotFound
from app.pagination import decode_cursor, decode_int_cursor, malformed_cursor, split_page

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
    """A page of events in seq order, keyset-paginated.

    Pages filtered by agency or time are ordered by (occurred_at, seq) — the same order, because
    occurred_at never decreases along the chain — so the (agency, occurred_at, seq) and (occurred_at, seq)
    indexes return the page directly instead of sorting the whole window. "Who saw record X" pages walk
    the resource index (resource_id, seq) in order instead.
    """
    conditions = [column == value for column, value in (
        (AuditEvent.actor_agency, agency), (AuditEvent.actor_token_id, token_id), (AuditEvent.action, action),
        (AuditEvent.outcome, outcome)) if value is not None]
    if since is not None:
        conditions.append(AuditEvent.occurred_at >= since)
    if until is not None:
        conditions.append(AuditEvent.occurred_at < until)
    if resource_id is not None:
        rows, next_cursor = _events_about(session, resource_id, conditions, descending=descending,
                                          limit=limit, cursor=cursor)
    elif agency is not None or since is not None or until is not None:
        stmt = _after_time_cursor(select(AuditEvent).where(*conditions), cursor, descending)
        keys = (AuditEvent.occurred_at, AuditEvent.seq)
        stmt = stmt.order_by(*(k.desc() if descending else k.asc() for k in keys)).limit(limit + 1)
        rows, next_cursor = split_page(list(session.scalars(stmt)), limit,
                                       lambda r: (r.occurred_at.isoformat(), r.seq))
    else:
        stmt = select(AuditEvent).where(*conditions)
        last_seq = decode_int_cursor(cursor)
        if last_seq is not None:
            stmt = stmt.where(AuditEvent.seq < last_seq if descending else AuditEvent.seq > last_seq)
        stmt = stmt.order_by(AuditEvent.seq.desc() if descending else AuditEvent.seq.asc()).limit(limit + 1)
        rows, next_cursor = split_page(list(session.scalars(stmt)), limit, lambda r: (r.seq,))
    return [event_document(_as_mapping(r)) for r in rows], next_cursor


def _events_about(
    session: Session, resource_id: str, conditions: list[ColumnElement[bool]], *, descending: bool,
    limit: int, cursor: str | None,
) -> tuple[list[AuditEvent], str | None]:
    """A page of the events naming one record, read in seq order off the (resource_id, seq) primary key.

    The page is ordered by the index's own seq (the same number as the event's), so the index is walked
    from the cursor and stops after the page: a record named by tens of thousands of events costs as much
    as one named by a few. With no other filter the page of seqs is cut in a subquery first, which keeps
    PostgreSQL from merge-joining it against the whole event table; other filters are checked on the
    events as the walk meets them.
    """
    linked = AuditEventResource.seq
    where = [AuditEventResource.resource_id == resource_id]
    last_seq = decode_int_cursor(cursor)
    if last_seq is not None:
        where.append(linked < last_seq if descending else linked > last_seq)
    order = linked.desc() if descending else linked.asc()
    if conditions:
        stmt = (select(AuditEvent).join(AuditEventResource, linked == AuditEvent.seq)
                .where(*where, *conditions).order_by(order).limit(limit + 1))
    else:
        page = select(linked).where(*where).order_by(order).limit(limit + 1).subquery()
        stmt = (select(AuditEvent).join(page, page.c.seq == AuditEvent.seq)
                .order_by(page.c.seq.desc() if descending else page.c.seq.asc()))
    return split_page(list(session.scalars(stmt)), limit, lambda r: (r.seq,))


def _after_time_cursor(stmt: Select[Any], cursor: str | None, descending: bool) -> Select[Any]:
    if cursor is None:
        return stmt
    instant_raw, last_seq = decode_cursor(cursor, 2)
    try:
        instant = datetime.fromisoformat(instant_raw)
    except (TypeError, ValueError):
        raise malformed_cursor() from None
    if instant.tzinfo is None or not isinstance(last_seq, int) or isinstance(last_seq, bool):
        raise malformed_cursor()
    at, seq = AuditEvent.occurred_at, AuditEvent.seq
    if descending:
        # The plain bound on occurred_at lets the index range scan start at the cursor.
        return stmt.where(at <= instant, or_(at < instant, and_(at == instant, seq < last_seq)))
    return stmt.where(at >= instant, or_(at > instant, and_(at == instant, seq > last_seq)))


def _as_mapping(row: AuditEvent) -> dict[str, Any]:
    return {c: getattr(row, c) for c in EVENT_COLUMNS}


def get_event(*, session: Session, seq: int) -> dict[str, Any]:
    row = session.get(AuditEvent, seq)
    if row is None:
        raise NotFound(f"no audit event with seq {seq}")
    return event_document(_as_mapping(row))


def iter_documents(
    session: Session, *, from_seq: int = 1, to_seq: int | None = None,
    since: datetime | None = None, until: datetime | None = None,
) -> EventStream:
    """Events in seq order, fetched in chunks by keyset so memory stays constant on any log size
    (`verify_documents` verifies such a stream much faster than other iterables: app/audit/stream.py)."""
    return EventStream(session, from_seq=from_seq, to_seq=to_seq, since=since, until=until)


# What a hand-edited column that no longer loads as an event raises (JSON that is not a list, a timestamp
# that is not one): verification must name that event, not crash.
_UNLOADABLE = (TypeError, ValueError, KeyError, AttributeError)


def recorded_head(session: Session) -> tuple[int, str, int]:
    """The head row's seq and hash and the highest stored seq, read in one statement (one snapshot)."""
    highest = select(func.coalesce(func.max(AuditEvent.seq), 0)).scalar_subquery()
    row = session.execute(select(ChainHead.seq, ChainHead.hash, highest).where(ChainHead.id == 1)).one()
    return row[0], row[1], row[2]


def _hash_at(session: Session, seq: int) -> str | None:
    if seq == 0:
        return GENESIS_HASH
    return session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == seq))


def verify(
    session: Session, *, from_seq: int = 1, to_seq: int | None = None, checkpoint: Checkpoint | None = None
) -> VerifyResult:
    """Recompute every hash from the stored columns and check links, gaps, the head row and a checkpoint.

    The result's head is the last event that verified (for an intact full log, the chain head) and
    `first_invalid_seq` the first event that is changed, missing, out of place or unaccounted for:
    - an event whose hash or link does not verify, or a gap (removed events): that seq;
    - the head row records more events than the log holds (cut off the end): the first missing seq;
    - the last event does not have the hash the head row records (rewritten with its hash): that seq;
    - events stored beyond the recorded head (inserted at the end): the head seq + 1;
    - with a checkpoint (seq, hash): the log no longer reaches seq (the first missing seq), or the event
      at seq has another hash (the chain was rewritten after the checkpoint was signed): seq.
    """
    head_seq, head_hash, highest = recorded_head(session)
    wanted = head_seq if to_seq is None else to_seq
    if checkpoint is not None:
        wanted = max(wanted, checkpoint.seq)  # a checkpoint is only checked on a range that reaches it
    end = min(wanted, head_seq)
    if from_seq > end:
        result = VerifyResult(True, 0, head_seq, head_hash, None)
    else:
        prev_hash = _hash_at(session, from_seq - 1) if from_seq > 1 else None
        result = _walk(session, from_seq=from_seq, to_seq=end, prev_hash=prev_hash)
    first_bad = result.first_invalid_seq
    if first_bad is None and from_seq <= end:
        if result.head_seq < end:
            first_bad = result.head_seq + 1  # the head row says these events exist; they are gone
        elif end == head_seq and result.head_hash != head_hash:
            first_bad = head_seq  # the last event was rewritten, hash included
    if first_bad is None and (to_seq is None or wanted > head_seq) and highest > head_seq:
        first_bad = head_seq + 1  # rows past the head no appender wrote
    if checkpoint is not None:
        verified_to = result.head_seq if first_bad is None else first_bad - 1
        held = check_checkpoint(session, checkpoint.seq, checkpoint.hash, verified_to=verified_to)
        if held is not None and (first_bad is None or held < first_bad):
            first_bad = held
    if first_bad is None:
        return result
    good = first_bad - 1
    return VerifyResult(False, result.checked, good, _hash_at(session, good) or "", first_bad)


def _walk(session: Session, *, from_seq: int, to_seq: int, prev_hash: str | None) -> VerifyResult:
    try:
        return verify_documents(iter_documents(session, from_seq=from_seq, to_seq=to_seq),
                                from_seq=from_seq, prev_hash=prev_hash)
    except _UNLOADABLE:
        return _walk_around_unloadable(session, from_seq=from_seq, to_seq=to_seq, prev_hash=prev_hash)


@dataclass
class _Progress:
    seq: int | None = None
    hash: str | None = None
    count: int = 0


def _tracked(documents: Iterator[dict[str, Any]], progress: _Progress) -> Iterator[dict[str, Any]]:
    for document in documents:
        yield document
        # Reached only when the walk asks for the next event, i.e. after this one verified.
        progress.seq, progress.hash = document["seq"], document["hash"]
        progress.count += 1


def _walk_around_unloadable(
    session: Session, *, from_seq: int, to_seq: int, prev_hash: str | None
) -> VerifyResult:
    """The slow path, taken only when some row would not load: walk again noting how far events verified,
    then go on one row at a time, so the row that will not load is named like any other bad event."""
    progress = _Progress()
    try:
        return verify_documents(_tracked(iter_documents(session, from_seq=from_seq, to_seq=to_seq), progress),
                                from_seq=from_seq, prev_hash=prev_hash)
    except _UNLOADABLE:
        pass
    resume = from_seq if progress.seq is None else progress.seq + 1
    resume_prev = prev_hash if progress.seq is None else progress.hash
    rest = verify_documents(_documents_one_by_one(session, from_seq=resume, to_seq=to_seq),
                            from_seq=resume, prev_hash=resume_prev)
    return VerifyResult(rest.ok, progress.count + rest.checked, rest.head_seq, rest.head_hash,
                        rest.first_invalid_seq)


def _documents_one_by_one(session: Session, *, from_seq: int, to_seq: int) -> Iterator[dict[str, Any]]:
    columns = AuditEvent.__table__.columns
    last = from_seq - 1
    while True:
        seqs = session.scalars(select(columns.seq).where(columns.seq > last, columns.seq <= to_seq)
                               .order_by(columns.seq).limit(_STREAM_CHUNK)).all()
        if not seqs:
            return
        for seq in seqs:
            try:
                document = event_document(session.execute(select(*columns).where(columns.seq == seq)).one())
            except _UNLOADABLE:
                # A document no hash can match: the walk reports it (or an earlier gap) as first bad.
                yield {"seq": seq, "prev_hash": "", "hash": ""}
                return
            yield document
        last = seqs[-1]


def check_checkpoint(session: Session, seq: int, expected_hash: str, *, verified_to: int) -> int | None:
    """With a verified chain up to `verified_to`, a checkpoint (seq, hash) holds when the log still
    reaches that seq and the event there has that hash. Returns the first bad seq, or None."""
    if seq == 0:
        return None if expected_hash == GENESIS_HASH else 1  # the empty log: nothing to lose
    if verified_to < seq:
        return verified_to + 1  # cut off the end: the first missing seq
    stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == seq))
    # A mismatch means the chain was rewritten at or before `seq` after the checkpoint was signed; with
    # only this checkpoint the change cannot be pinned any earlier than its seq.
    return seq if stored != expected_hash else None
