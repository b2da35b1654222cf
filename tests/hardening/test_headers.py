"""Security headers on every answer, and CORS: off by default, an explicit allowlist when configured."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import app.audit.writer
from app.config import Settings, load_settings
from tests.conftest import TokenFactory, audit_rows, bearer
from tests.hardening.conftest import serve

PORTAL = "https://portal.bkn.go.id"


def assert_hardened(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert headers["x-request-id"]


def test_every_kind_of_answer_carries_nosniff_and_no_store(
    client: TestClient, issue_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue_token("BKN", "admin")
    answers = [
        client.get("/v1/agencies", headers=bearer(token)),  # personal data
        client.get("/v1/tokens", headers=bearer(token)),
        client.get("/v1/agencies"),  # 401
        client.get("/v1/nowhere", headers=bearer(token)),  # 404
        client.post("/v1/agencies", json={"code": "x"}, headers=bearer(token)),  # 422
        client.get("/healthz"),
    ]
    monkeypatch.setattr(app.audit.writer, "append_rows", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    answers.append(client.get("/v1/agencies", headers=bearer(token)))  # 503: the event could not be kept
    assert [a.status_code for a in answers] == [200, 200, 401, 404, 422, 200, 503]
    for answer in answers:
        assert_hardened(answer)


def test_no_cors_headers_unless_configured(client: TestClient, issue_token: TokenFactory) -> None:
    preflight = client.options("/v1/agencies", headers={
        "Origin": PORTAL, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    plain = client.get("/v1/agencies", headers={"Origin": PORTAL, **bearer(issue_token("BKN", "admin"))})
    for response in (preflight, plain):
        assert not any(h.startswith("access-control-") for h in response.headers), response.headers
    assert preflight.status_code in (401, 405)


def test_cors_answers_only_the_allowlisted_origins(
    make_settings: Callable[..., Settings], issue_token: TokenFactory, db: Session
) -> None:
    token = issue_token("BKN", "admin")
    with serve(make_settings(cors_origins=[PORTAL])) as client:
        allowed = client.options("/v1/agencies", headers={
            "Origin": PORTAL, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, if-match"})
        refused = client.options("/v1/agencies", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        simple = client.get("/v1/agencies", headers={"Origin": PORTAL, **bearer(token)})
        foreign = client.get("/v1/agencies", headers={"Origin": "https://evil.example", **bearer(token)})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == PORTAL
    assert {"authorization", "content-type", "if-match"} <= {
        h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")}
    assert "access-control-allow-credentials" not in allowed.headers
    assert_hardened(allowed)
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == PORTAL
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers
    preflights = [e for e in audit_rows(db) if e.method == "OPTIONS"]
    assert [(e.status_code, e.actor_kind) for e in preflights] == [(200, "anonymous"), (400, "anonymous")]


def test_the_cors_allowlist_comes_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBT_CORS_ORIGINS", f'["{PORTAL}", "https://sipp.bawaslu.go.id"]')
    assert load_settings().cors_origins == [PORTAL, "https://sipp.bawaslu.go.id"]
