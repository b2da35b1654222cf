"""Appending to and verifying the hash chain. The only code that writes `audit_events`."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.orm import Session

from app.audit import canonical
from app.audit.canonical import ROW_FIELDS, document_text, instant_text
from app.audit.canonical import canonical_json as canonical_json
from app.audit.models import GENESIS_HASH, AuditEvent, AuditEventResource, ChainHead
from app.clock import format_instant, utcnow
from app.rawdb import Driver

EVENT_COLUMNS = [c.name for c in AuditEvent.__table__.columns]

# The tables behind the models, for Core statements on the hot path.
_EVENTS = cast(Table, AuditEvent.__table__)
_RESOURCES = cast(Table, AuditEventResource.__table__)
_HEAD = cast(Table, ChainHead.__table__)


def time_ordered_uuid(unix_ms: int, random80: int) -> str:
    """A version 7 UUID (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits (`random80`'s low
    12 bits above its low 62, the version and variant in between).

    Event ids are made this way so that each new id lands at the end of the `audit_events.id` index,
    like `seq`: with random (version 4) ids every append wrote into a random page of an index that grows
    with the log, which on a 10 M-event log is a page cache miss and a page written per event.
    """
    value = ((unix_ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | ((random80 >> 62) & 0xFFF) << 64
             | 0b10 << 62 | random80 & 0x3FFF_FFFF_FFFF_FFFF)
    return str(uuid.UUID(int=value))


@dataclass
class EventDraft:
    """An event before it has a place in the chain."""

    request_id: str
    actor_kind: str
    action: str
    outcome: str
    actor_token_id: str | None = None
    actor_agency: str | None = None
    status_code: int | None = None
    method: str | None = None
    path: str | None = None
    query: str | None = None
    resource_type: str | None = None
    resource_ids: list[str] = field(default_factory=list)
    client_ip: str | None = None
    user_agent: str | None = None
    purpose: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def outcome_for(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403, 429):
        return "denied"
    return "rejected" if status < 500 else "error"


def event_document(row: Any) -> dict[str, Any]:
    """The event exactly as the API returns it, built from the stored columns (a row or mapping)."""
    get = row.__getitem__ if isinstance(row, dict) else row._mapping.__getitem__
    return {
        "seq": get("seq"),
        "id": get("id"),
        "occurred_at": format_instant(get("occurred_at")),
        "request_id": get("request_id"),
        "actor": {
            "kind": get("actor_kind"),
            "token_id": get("actor_token_id"),
            "agency": get("actor_agency"),
        },
        "action": get("action"),
        "outcome": get("outcome"),
        "status_code": get("status_code"),
        "method": get("method"),
        "path": get("path"),
        "query": get("query"),
        "resource_type": get("resource_type"),
        "resource_ids": list(get("resource_ids")),
        "client_ip": get("client_ip"),
        "user_agent": get("user_agent"),
        "purpose": get("purpose"),
        "detail": get("detail"),
        "prev_hash": get("prev_hash"),
        "hash": get("hash"),
    }


def event_hash(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the event without its `hash` field (docs/audit.md); the bytes are
    `canonical_json` of it, built faster (app/audit/canonical.py)."""
    return hashlib.sha256(document_text(document).encode()).hexdigest()


def row_hash(row: Sequence[Any]) -> str:
    """`event_hash(event_document(row))` for a stored event given as loaded values in ROW_FIELDS order."""
    return hashlib.sha256(_row_text(row).encode()).hexdigest()


def _row_text(row: Sequence[Any]) -> str:
    try:
        ids = row[14]
        return canonical.values_text((*row[:2], instant_text(row[2]), *row[3:14],
                                      ids if ids.__class__ is list else list(ids), *row[15:20]))
    except Exception:  # the reference gives the answer, or the error, it would give
        return document_text(event_document(dict(zip(ROW_FIELDS, (*row[:20], ""), strict=True))))


def lock_head(conn: Connection | Session) -> Any:
    """Lock the chain head for this transaction (row lock on PostgreSQL; SQLite is already IMMEDIATE),
    with the time of the last event, in one round trip."""
    stmt = (
        select(ChainHead.seq, ChainHead.hash, ChainHead.feed_seq, AuditEvent.occurred_at.label("last_at"))
        .outerjoin(AuditEvent, AuditEvent.seq == ChainHead.seq)
        .where(ChainHead.id == 1)
    )
    dialect = conn.get_bind().dialect if isinstance(conn, Session) else conn.dialect
    if dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=ChainHead)
    head = conn.execute(stmt).one_or_none()
    if head is None:
        raise RuntimeError("chain_head row missing: run `sbt db upgrade`")
    return head


_DRAFT_FIELDS = tuple(EventDraft.__dataclass_fields__)
# Built from the model's column names only, never from data.
_INSERT_EVENT = (
    f"INSERT INTO audit_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"  # noqa: S608
)
_INSERT_RESOURCE = "INSERT INTO audit_event_resources (resource_id, seq) VALUES (?, ?)"
_HEAD_SQL = (
    "SELECT h.seq, h.hash, h.feed_seq, e.occurred_at FROM chain_head h"
    " LEFT JOIN audit_events e ON e.seq = h.seq WHERE h.id = 1"
)
_MOVE_HEAD = "UPDATE chain_head SET seq = ?, hash = ?, feed_seq = ? WHERE id = 1"


def append_events(
    conn: Connection | Session, drafts: Iterable[EventDraft], *, feed_entries: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Chain and insert events in the caller's transaction; returns the documents and the first feed seq.

    The head row stays locked until the caller commits, which is what keeps concurrent writers in
    several processes on one unforked chain and keeps feed positions in commit order. Every audited
    request runs this, so its statements are driver-level (app/rawdb.py), on the caller's transaction.
    """
    if isinstance(conn, Session):
        # Flush first so the change this event records is written before the event.
        conn.flush()
        conn = conn.connection()
    return append_rows(conn.connection, Driver.of(conn.dialect), drafts, feed_entries=feed_entries)


def append_rows(
    dbapi_connection: Any, driver: Driver, drafts: Iterable[EventDraft], *, feed_entries: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """`append_events` on a DBAPI connection, in the transaction open on it."""
    cursor = dbapi_connection.cursor()
    try:
        head_sql = _HEAD_SQL if driver.is_sqlite else _HEAD_SQL + " FOR UPDATE OF h"
        cursor.execute(head_sql)
        head = cursor.fetchone()
        if head is None:
            raise RuntimeError("chain_head row missing: run `sbt db upgrade`")
        seq, prev, feed_seq, last_at = head
        # occurred_at never goes backwards along the chain, even across instances with skewed clocks, so
        # ordering by (occurred_at, seq) is seq order and time-range pages can walk their index.
        now = utcnow()
        last = driver.instant(last_at)
        if last is not None and last > now:
            now = last
        stored_now = driver.instant_param(now)
        now_ms = int(now.timestamp() * 1000)
        rows: list[tuple[Any, ...]] = []
        links: list[tuple[str, int]] = []
        documents: list[dict[str, Any]] = []
        for draft in drafts:
            seq += 1
            event_id = time_ordered_uuid(now_ms, int.from_bytes(os.urandom(10)))
            row = {"seq": seq, "id": event_id, "occurred_at": now,
                   **{k: getattr(draft, k) for k in _DRAFT_FIELDS}, "prev_hash": prev, "hash": ""}
            row["resource_ids"] = list(draft.resource_ids)
            row["detail"] = dict(draft.detail)
            document = event_document(row)
            document["hash"] = prev = event_hash(document)
            documents.append(document)
            stored = {**row, "occurred_at": stored_now, "hash": prev,
                      "resource_ids": driver.json_param(row["resource_ids"]),
                      "detail": driver.json_param(row["detail"])}
            rows.append(tuple(stored[column] for column in EVENT_COLUMNS))
            links.extend((rid, seq) for rid in dict.fromkeys(row["resource_ids"]))
        if rows:
            cursor.executemany(driver.sql(_INSERT_EVENT), rows)
        if links:
            cursor.executemany(driver.sql(_INSERT_RESOURCE), links)
        cursor.execute(driver.sql(_MOVE_HEAD), (seq, prev, feed_seq + feed_entries))
    finally:
        cursor.close()
    return documents, feed_seq + 1


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_invalid_seq: int | None


def verify_documents(
    documents: Iterator[dict[str, Any]], *, from_seq: int = 1, prev_hash: str | None = None
) -> VerifyResult:
    """Walk events in seq order: each must follow the last with no gap, link to its hash and hash right.

    Given the stream `app.audit.service.iter_documents` returns, untouched, the stream checks its stored
    rows itself instead of building documents (app/audit/stream.py): the same result, several times
    faster. (A row that would not load as a document is reported as the invalid event there, where
    building documents would raise.)
    """
    verify_chain = getattr(documents, "verify_chain", None)
    if verify_chain is not None:
        result: VerifyResult | None = verify_chain(from_seq=from_seq, prev_hash=prev_hash)
        if result is not None:
            return result
    expected_seq = from_seq
    prev = GENESIS_HASH if prev_hash is None and from_seq == 1 else prev_hash
    checked = 0
    last_hash = prev or GENESIS_HASH
    for doc in documents:
        checked += 1
        try:
            hashes_right = doc["hash"] == event_hash(doc)
        except (TypeError, ValueError):  # a value no JSON can hold (bytes SQLite kept in a text column)
            hashes_right = False
        bad = doc["seq"] != expected_seq or not hashes_right
        if prev is not None and doc["prev_hash"] != prev:
            bad = True
        if bad:
            return VerifyResult(False, checked, doc["seq"], doc["hash"], expected_seq)
        prev = last_hash = doc["hash"]
        expected_seq += 1
    return VerifyResult(True, checked, expected_seq - 1, last_hash, None)
