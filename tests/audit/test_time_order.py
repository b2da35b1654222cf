"""occurred_at never decreases along the chain, so agency/time pages (index order) equal seq order."""

from __future__ import annotations

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
