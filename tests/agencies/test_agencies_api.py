"""The agency roster over HTTP: listing, creating, updating, deactivating."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import TokenFactory, audit_rows, bearer

SEEDED = {
    "BAWASLU": ["reporter"],
    "BKN": ["enforcer", "follow_up", "reporter", "verifier"],
    "KASN": ["reporter", "verifier"],
    "KEMENDAGRI": ["follow_up", "monitor", "reporter"],
    "KEMENPANRB": ["monitor", "reporter"],
}


def test_any_valid_token_lists_the_five_seeded_agencies(
    client: TestClient, issue_token: TokenFactory
) -> None:
    token = issue_token("BAWASLU", "violations:read")
    response = client.get("/v1/agencies", headers=bearer(token))
    assert response.status_code == 200
    items = response.json()["items"]
    assert {a["code"]: a["roles"] for a in items} == SEEDED
    assert all(a["active"] for a in items)


def test_listing_without_a_token_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    response = client.get("/v1/agencies")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_token"


def test_admin_creates_an_agency_and_a_duplicate_is_409(
    client: TestClient, issue_token: TokenFactory
) -> None:
    admin = issue_token("BKN", "admin")
    body = {"code": "DKPP", "name": "Dewan Kehormatan Penyelenggara Pemilu", "roles": ["reporter"]}
    created = client.post("/v1/agencies", json=body, headers=bearer(admin))
    assert created.status_code == 201, created.text
    assert created.json() == {**body, "active": True}
    again = client.post("/v1/agencies", json=body, headers=bearer(admin))
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


def test_creating_needs_the_admin_scope(client: TestClient, issue_token: TokenFactory) -> None:
    reader = issue_token("BKN", "violations:read", "violations:write", "audit:read")
    response = client.post("/v1/agencies", json={"code": "DKPP", "name": "x"}, headers=bearer(reader))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"


def test_bad_agency_bodies_are_422_naming_the_field(client: TestClient, issue_token: TokenFactory) -> None:
    admin = issue_token("BKN", "admin")
    cases = [
        ({"code": "lower", "name": "x"}, "code"),
        ({"code": "X", "name": "x"}, "code"),
        ({"code": "NEWBODY", "name": ""}, "name"),
        ({"code": "NEWBODY", "name": "x", "roles": ["judge"]}, "roles"),
        ({"code": "NEWBODY", "name": "x", "id": 3}, "id"),
    ]
    for body, field in cases:
        response = client.post("/v1/agencies", json=body, headers=bearer(admin))
        assert response.status_code == 422, body
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert any(field in [str(p) for p in e["loc"]] for e in problem["errors"]), problem


def test_patch_unknown_agency_is_404(client: TestClient, issue_token: TokenFactory) -> None:
    admin = issue_token("BKN", "admin")
    response = client.patch("/v1/agencies/NOPE", json={"name": "x"}, headers=bearer(admin))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_deactivated_agency_tokens_get_agency_inactive(client: TestClient, issue_token: TokenFactory) -> None:
    admin = issue_token("BKN", "admin")
    kasn = issue_token("KASN", "violations:read")
    assert client.get("/v1/agencies", headers=bearer(kasn)).status_code == 200
    patched = client.patch("/v1/agencies/KASN", json={"active": False}, headers=bearer(admin))
    assert patched.status_code == 200
    assert patched.json()["active"] is False
    denied = client.get("/v1/agencies", headers=bearer(kasn))
    assert denied.status_code == 403
    assert denied.json()["code"] == "agency_inactive"


def test_roles_and_name_can_change_and_null_is_rejected(
    client: TestClient, issue_token: TokenFactory
) -> None:
    admin = issue_token("BKN", "admin")
    ok = client.patch(
        "/v1/agencies/KEMENPANRB", json={"roles": ["monitor"], "name": "KemenPAN-RB"}, headers=bearer(admin)
    )
    assert ok.status_code == 200
    assert ok.json()["roles"] == ["monitor"] and ok.json()["name"] == "KemenPAN-RB"
    assert (
        client.patch("/v1/agencies/KEMENPANRB", json={"active": None}, headers=bearer(admin)).status_code
        == 422
    )


def test_every_request_writes_one_event(client: TestClient, issue_token: TokenFactory, db: Session) -> None:
    admin = issue_token("BKN", "admin")
    before = len(audit_rows(db))
    client.get("/v1/agencies", headers=bearer(admin))
    client.get("/v1/agencies")
    client.post("/v1/agencies", json={"code": "lower"}, headers=bearer(admin))
    events = audit_rows(db)[before:]
    assert [(e.action, e.outcome, e.status_code) for e in events] == [
        ("agency.list", "success", 200),
        ("auth.failed", "denied", 401),
        ("agency.create", "rejected", 422),
    ]
