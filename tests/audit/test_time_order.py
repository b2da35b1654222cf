"""occurred_at never decreases along the chain, so agency/time pages (index order) equal seq order."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import app.audit.chain as chain
from app.clock import utcnow
from tests.conftest import TokenFactory, audit_rows, bearer


def test_a_clock_that_steps_back_does_not_move_occurred_at_back(
    client: TestClient, issue_token: TokenFactory, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue_token("BKN", "violations:read")
    client.get("/v1/agencies", headers=bearer(token))
    before = audit_rows(db)[-1].occurred_at
    monkeypatch.setattr(chain, "utcnow", lambda: utcnow() - timedelta(hours=3))
    client.get("/v1/agencies", headers=bearer(token))
    after = audit_rows(db)[-1].occurred_at
    assert after == before  # held at the previous event's time, not three hours earlier


def _walk(client: TestClient, auditor: str, **params: Any) -> list[int]:
    seqs: list[int] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/audit/events", params=query, headers=bearer(auditor))
        assert page.status_code == 200, page.text
        seqs += [e["seq"] for e in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return seqs


def test_agency_and_time_pages_walk_exactly_the_window_in_seq_order(
    client: TestClient, issue_token: TokenFactory, db: Session
) -> None:
    bkn = issue_token("BKN", "violations:read")
    kasn = issue_token("KASN", "violations:read")
    auditor = issue_token("KEMENPANRB", "audit:read")
    since = utcnow() - timedelta(seconds=1)
    for i in range(14):
        client.get("/v1/agencies", headers=bearer(bkn if i % 3 else kasn))
    rows = [r for r in audit_rows(db) if r.actor_agency == "BKN" and r.occurred_at >= since]
    expected = [r.seq for r in rows]
    assert len(expected) >= 9
    window = {"agency": "BKN", "since": since.isoformat(), "limit": 4}
    assert _walk(client, auditor, **window, order="asc") == expected
    assert _walk(client, auditor, **window) == expected[::-1]
    # Agency alone (no time bounds) takes the same index path; the auditor is another agency, so
    # walking does not add BKN events.
    every_bkn = [r.seq for r in audit_rows(db) if r.actor_agency == "BKN"]
    assert _walk(client, auditor, agency="BKN", limit=4, order="asc") == every_bkn


def test_a_seq_cursor_is_refused_on_a_time_ordered_page(
    client: TestClient, issue_token: TokenFactory
) -> None:
    auditor = issue_token("BKN", "audit:read")
    client.get("/v1/audit/events", headers=bearer(auditor))
    plain = client.get("/v1/audit/events", params={"limit": 1}, headers=bearer(auditor)).json()["next_cursor"]
    assert plain is not None
    mixed = client.get("/v1/audit/events", params={"agency": "BKN", "cursor": plain}, headers=bearer(auditor))
    assert mixed.status_code == 422


def test_event_ids_are_rfc_9562_version_7() -> None:
    # RFC 9562, appendix A.6: unix_ts_ms 0x017F22E279B0, rand_a 0xCC3, rand_b 0x18C4DC0C0C07398F.
    random80 = 0xCC3 << 62 | 0x18C4DC0C0C07398F
    assert chain.time_ordered_uuid(0x017F22E279B0, random80) == "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
    made = uuid.UUID(chain.time_ordered_uuid(1_764_633_600_000, (1 << 80) - 1))
    assert made.version == 7 and made.variant == uuid.RFC_4122


def test_event_ids_follow_the_chain_order_and_carry_occurred_at(
    client: TestClient, issue_token: TokenFactory, db: Session
) -> None:
    token = issue_token("BKN", "violations:read")
    for _ in range(5):
        client.get("/v1/agencies", headers=bearer(token))
    rows = audit_rows(db)[-5:]
    ids = [uuid.UUID(r.id) for r in rows]
    assert all(i.version == 7 for i in ids)
    # The first 48 bits are occurred_at in Unix milliseconds, so later events sort after earlier ones
    # in the id index (equal milliseconds may come in any order: the rest is random).
    for row, event_id in zip(rows, ids, strict=True):
        assert event_id.int >> 80 == int(row.occurred_at.timestamp() * 1000)
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)
