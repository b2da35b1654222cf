"""Appending to and verifying the hash chain. The only code that writes `audit_events`."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.orm import Session

from app.audit.models import GENESIS_HASH, AuditEvent, AuditEventResource, ChainHead
from app.clock import format_instant, utcnow

EVENT_COLUMNS = [c.name for c in AuditEvent.__table__.columns]


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


def canonical_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the event without its `hash` field (docs/audit.md)."""
    body = {k: v for k, v in document.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def lock_head(conn: Connection | Session) -> ChainHead | Any:
    """Lock the chain head for this transaction (row lock on PostgreSQL; SQLite is already IMMEDIATE)."""
    stmt = select(ChainHead.seq, ChainHead.hash, ChainHead.feed_seq).where(ChainHead.id == 1)
    if conn.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    head = conn.execute(stmt).one_or_none()
    if head is None:
        raise RuntimeError("chain_head row missing: run `sbt db upgrade`")
    return head


def append_events(
    conn: Connection | Session, drafts: Iterable[EventDraft], *, feed_entries: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Chain and insert events in the caller's transaction; returns the documents and the first feed seq.

    The head row stays locked until the caller commits, which is what keeps concurrent writers in
    several processes on one unforked chain and keeps feed positions in commit order.
    """
    head = lock_head(conn)
    seq, prev = head.seq, head.hash
    first_feed_seq = head.feed_seq + 1
    rows: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    now = utcnow()
    for draft in drafts:
        seq += 1
        row = {
            "seq": seq,
            "id": str(uuid.uuid4()),
            "occurred_at": now,
            **{k: getattr(draft, k) for k in EventDraft.__dataclass_fields__},
            "prev_hash": prev,
        }
        row["resource_ids"] = list(draft.resource_ids)
        row["detail"] = dict(draft.detail)
        document = event_document(row | {"hash": ""})
        row["hash"] = prev = event_hash(document)
        document["hash"] = row["hash"]
        rows.append(row)
        documents.append(document)
    if rows:
        conn.execute(insert(AuditEvent), rows)
        links = [{"resource_id": rid, "seq": r["seq"]} for r in rows for rid in dict.fromkeys(r["resource_ids"])]
        if links:
            conn.execute(insert(AuditEventResource), links)
    conn.execute(
        update(ChainHead)
        .where(ChainHead.id == 1)
        .values(seq=seq, hash=prev, feed_seq=head.feed_seq + feed_entries)
    )
    return documents, first_feed_seq


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
    """Walk events in seq order: each must follow the last with no gap, link to its hash and hash right."""
    expected_seq = from_seq
    prev = GENESIS_HASH if prev_hash is None and from_seq == 1 else prev_hash
    checked = 0
    last_hash = prev or GENESIS_HASH
    for doc in documents:
        checked += 1
        bad = doc["seq"] != expected_seq or doc["hash"] != event_hash(doc)
        if prev is not None and doc["prev_hash"] != prev:
            bad = True
        if bad:
            return VerifyResult(False, checked, doc["seq"], doc["hash"], expected_seq)
        prev = last_hash = doc["hash"]
        expected_seq += 1
    return VerifyResult(True, checked, expected_seq - 1, last_hash, None)
