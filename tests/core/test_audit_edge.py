"""Every /v1 request writes exactly one audit event, whatever its outcome, and fails closed."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.audit.chain import verify_documents
from app.audit.service import iter_documents
from tests.conftest import TokenFactory, audit_rows, bearer


def _one_new_event(db: Session, before: int):  # type: ignore[no-untyped-def]
    rows = audit_rows(db)
    assert len(rows) == before + 1, [(r.action, r.status_code) for r in rows[before:]]
    return rows[-1]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "token_scopes", "status", "action", "outcome"),
    [
        ("GET", "/v1/agencies", {}, ("violations:read",), 200, "agency.list", "success"),
        ("GET", "/v1/agencies", {}, None, 401, "auth.failed", "denied"),
        ("GET", "/v1/nowhere", {}, None, 401, "auth.failed", "denied"),
        ("GET", "/v1/nowhere", {}, ("violations:read",), 404, "request", "rejected"),
        ("PUT", "/v1/agencies", {}, ("admin",), 405, "request", "rejected"),
        (
            "POST",
            "/v1/agencies",
            {"json": {"code": "X"}},
            ("violations:read",),
            403,
            "agency.create",
            "denied",
        ),
        ("POST", "/v1/agencies", {"json": {"code": "bad"}}, ("admin",), 422, "agency.create", "rejected"),
        ("POST", "/v1/agencies", {"content": b"{not json"}, ("admin",), 422, "agency.create", "rejected"),
        ("POST", "/v1/agencies", {"content": b"x" * 1_100_000}, ("admin",), 413, "agency.create", "rejected"),
        ("GET", "/v1/tokens/not-a-uuid", {}, ("admin",), 422, "token.read", "rejected"),
    ],
)
def test_each_outcome_writes_exactly_one_event(
    client: TestClient,
    issue_token: TokenFactory,
    db: Session,
    method: str,
    path: str,
    kwargs: dict[str, object],
    token_scopes: tuple[str, ...] | None,
    status: int,
    action: str,
    outcome: str,
) -> None:
    headers = {
        "X-Request-ID": "req-123.abc_DEF",
        "User-Agent": "agency-system/1.0",
        "X-Purpose": "case review",
    }
    token = issue_token("BKN", *token_scopes) if token_scopes else None
    if token:
        headers |= bearer(token)
    before = len(audit_rows(db))
    response = client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == "req-123.abc_DEF"
    if status >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["request_id"] == "req-123.abc_DEF"
        assert response.json()["status"] == status
    event = _one_new_event(db, before)
    assert (event.action, event.outcome, event.status_code) == (action, outcome, status)
    assert (event.method, event.path, event.request_id) == (method, path, "req-123.abc_DEF")
    assert event.user_agent == "agency-system/1.0"
    if token and status != 401:
        assert (event.actor_kind, event.actor_agency) == ("token", "BKN")
    else:
        assert (event.actor_kind, event.actor_token_id, event.actor_agency) == ("anonymous", None, None)


def test_a_bad_request_id_is_replaced(client: TestClient) -> None:
    response = client.get("/v1/agencies", headers={"X-Request-ID": "has spaces and / slashes"})
    generated = response.headers["x-request-id"]
    assert generated != "has spaces and / slashes" and len(generated) == 32
    assert response.json()["request_id"] == generated


def test_purpose_and_query_are_recorded(client: TestClient, issue_token: TokenFactory, db: Session) -> None:
    token = issue_token("BKN", "admin")
    client.get("/v1/tokens?limit=5&agency=BKN", headers=bearer(token) | {"X-Purpose": "periodic review"})
    event = audit_rows(db)[-1]
    assert (event.purpose, event.query) == ("periodic review", "limit=5&agency=BKN")
    too_long = client.get("/v1/tokens", headers=bearer(token) | {"X-Purpose": "x" * 201})
    assert too_long.status_code == 422


def test_an_unexpected_error_is_a_generic_500_and_audited(
    client: TestClient, issue_token: TokenFactory, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.agencies.service as agency_service

    def explode(**_: object) -> None:
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(agency_service, "list_agencies", explode)
    token = issue_token("BKN", "violations:read")
    before = len(audit_rows(db))
    response = client.get("/v1/agencies", headers=bearer(token))
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    event = _one_new_event(db, before)
    assert (event.outcome, event.status_code) == ("error", 500)


def test_read_whose_event_cannot_be_written_gets_503_and_no_data(
    client: TestClient, issue_token: TokenFactory, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.audit.writer as writer

    token = issue_token("BKN", "violations:read")
    before = len(audit_rows(db))

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "append_rows", refuse)
    response = client.get("/v1/agencies", headers=bearer(token))
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert "BAWASLU" not in response.text
    assert len(audit_rows(db)) == before


def test_write_whose_event_cannot_be_written_is_not_kept(
    client: TestClient, issue_token: TokenFactory, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.audit.writer as writer
    import app.middleware as middleware

    token = issue_token("BKN", "admin")
    before = len(audit_rows(db))

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(middleware, "append_events", refuse)
    monkeypatch.setattr(writer, "append_rows", refuse)
    response = client.post("/v1/agencies", json={"code": "DKPP", "name": "DKPP"}, headers=bearer(token))
    assert response.status_code == 503
    assert "DKPP" not in response.text
    db.rollback()
    assert db.scalar(select(Agency).where(Agency.code == "DKPP")) is None
    assert len(audit_rows(db)) == before


def test_a_successful_write_commits_with_its_event(
    client: TestClient, issue_token: TokenFactory, db: Session
) -> None:
    token = issue_token("BKN", "admin")
    response = client.post("/v1/agencies", json={"code": "DKPP", "name": "DKPP"}, headers=bearer(token))
    assert response.status_code == 201
    event = audit_rows(db)[-1]
    assert (event.action, event.resource_type, event.resource_ids) == ("agency.create", "agency", ["DKPP"])


def test_eight_threads_of_fifty_requests_leave_one_gapless_chain(
    client: TestClient, issue_token: TokenFactory, db: Session
) -> None:
    admin = issue_token("BKN", "admin")
    reader = issue_token("KASN", "violations:read")
    before = len(audit_rows(db))
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(50):
            if i % 5 == 0:
                r = client.post(
                    "/v1/agencies", json={"code": f"T{n}_{i}", "name": "x"}, headers=bearer(admin)
                )
            elif i % 5 == 1:
                r = client.get("/v1/agencies")
            else:
                r = client.get("/v1/agencies", headers=bearer(reader))
            with lock:
                statuses[r.status_code] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == {201: 80, 401: 80, 200: 240}
    rows = audit_rows(db)
    assert len(rows) == before + 400
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    db.rollback()
    result = verify_documents(iter_documents(db))
    assert result.ok and result.checked == len(rows)


def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(client: TestClient) -> None:
    token_free = client.get("/v1/violations/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert token_free.status_code == 401, token_free.text
    assert "location" not in token_free.headers
    assert token_free.headers["content-type"] == "application/problem+json"
    docs = client.get("/docs/", follow_redirects=False)
    assert docs.status_code == 404
    assert "location" not in docs.headers
