"""/v1/tokens over HTTP: issuing, listing with keyset pages, inspecting and revoking, and who may do it."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.config import Settings
from app.main import create_app
from app.pagination import encode_cursor
from app.tokens.models import ApiToken
from tests.auth.forge import parts
from tests.conftest import TokenFactory, audit_rows, bearer

CREATED_FIELDS = {"id", "token", "agency", "name", "scopes", "created_at", "expires_at", "created_by"}
LISTED_FIELDS = {"id", "agency", "name", "scopes", "created_at", "expires_at", "created_by", "last_used_at",
                 "revoked_at"}
READER_BODY = {"agency": "KEMENDAGRI", "name": "kemendagri sync", "scopes": ["violations:read"]}


def instant(text_value: str) -> datetime:
    assert text_value.endswith("Z"), text_value
    return datetime.fromisoformat(text_value.replace("Z", "+00:00"))


def token_count(db: Session) -> int:
    db.rollback()
    return int(db.scalar(select(func.count()).select_from(ApiToken)) or 0)


@pytest.fixture
def admin(issue_token: TokenFactory) -> str:
    return issue_token("BKN", "admin")


def token_id(token: str) -> str:
    return str(parts(token)[1]["jti"])


def create(client: TestClient, admin: str, **changes: Any) -> dict[str, Any]:
    response = client.post("/v1/tokens", json={**READER_BODY, **changes}, headers=bearer(admin))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- POST /v1/tokens -----------------------------------------------------------------------------

def test_create_returns_exactly_the_documented_fields_and_the_token_works(
    client: TestClient, admin: str, db: Session
) -> None:
    response = client.post("/v1/tokens", json=READER_BODY, headers=bearer(admin))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CREATED_FIELDS
    assert body["agency"] == "KEMENDAGRI" and body["name"] == "kemendagri sync"
    assert body["scopes"] == ["violations:read"]
    assert body["created_by"] == token_id(admin)
    uuid.UUID(body["id"])
    created, expires = instant(body["created_at"]), instant(body["expires_at"])
    assert expires - created == timedelta(days=90)
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)

    header, claims, _ = parts(body["token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
    assert claims["sub"] == claims["jti"] == body["id"]
    assert (claims["iss"], claims["aud"], claims["agency"]) == ("sbt", "sbt-api", "KEMENDAGRI")
    assert claims["scope"] == "violations:read"
    assert (claims["iat"], claims["exp"]) == (int(created.timestamp()), int(expires.timestamp()))

    assert client.get("/v1/agencies", headers=bearer(body["token"])).status_code == 200
    event = audit_rows(db)[-1]
    assert (event.action, event.outcome, event.actor_token_id) == ("agency.list", "success", body["id"])

    creation = next(e for e in audit_rows(db) if e.action == "token.create" and e.actor_kind == "token")
    assert (creation.outcome, creation.status_code) == ("success", 201)
    assert creation.actor_token_id == token_id(admin)
    assert creation.resource_type == "token" and creation.resource_ids == [body["id"]]


def test_the_token_value_is_never_stored(client: TestClient, admin: str, db: Session) -> None:
    value = create(client, admin)["token"]
    signature = value.rsplit(".", 1)[1]
    db.rollback()
    rows = db.execute(text("SELECT * FROM api_tokens")).mappings().all()
    assert len(rows) == 2
    for row in rows:
        for column, stored in row.items():
            assert signature not in str(stored), column
            assert value not in str(stored), column
    for event in audit_rows(db):
        stored = " ".join(str(getattr(event, c.name)) for c in event.__table__.columns)
        assert signature not in stored, event.action


def test_expiry_defaults_to_90_days_and_is_capped_by_token_max_days(
    client: TestClient, admin: str, db: Session
) -> None:
    longest = create(client, admin, expires_in_days=365)
    assert instant(longest["expires_at"]) - instant(longest["created_at"]) == timedelta(days=365)
    before = token_count(db)
    too_long = client.post("/v1/tokens", json={**READER_BODY, "expires_in_days": 366}, headers=bearer(admin))
    assert too_long.status_code == 422
    problem = too_long.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"][0]["loc"] == ["body", "expires_in_days"]
    assert "365" in problem["errors"][0]["msg"]
    assert token_count(db) == before


def test_a_lower_token_max_days_is_enforced(
    make_settings: Callable[..., Settings], issue_token: TokenFactory
) -> None:
    admin = issue_token("BKN", "admin")
    with TestClient(create_app(make_settings(token_max_days=10)), raise_server_exceptions=False) as client:
        assert client.post("/v1/tokens", json={**READER_BODY, "expires_in_days": 10},
                           headers=bearer(admin)).status_code == 201
        refused = client.post("/v1/tokens", json={**READER_BODY, "expires_in_days": 11},
                              headers=bearer(admin))
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["body", "expires_in_days"]
        # Omitting it asks for the default of 90, which this deployment does not allow either.
        assert client.post("/v1/tokens", json=READER_BODY, headers=bearer(admin)).status_code == 422


@pytest.mark.parametrize(("changes", "field"), [
    ({"agency": "NOPE"}, "agency"),
    ({"agency": "bkn"}, "agency"),
    ({"agency": ""}, "agency"),
    ({"scopes": ["superuser"]}, "scopes"),
    ({"scopes": ["violations:read", "admin:all"]}, "scopes"),
    ({"scopes": []}, "scopes"),
    ({"scopes": ["admin", "admin"]}, "scopes"),
    ({"scopes": "admin"}, "scopes"),
    ({"expires_in_days": 0}, "expires_in_days"),
    ({"expires_in_days": -5}, "expires_in_days"),
    ({"expires_in_days": "forever"}, "expires_in_days"),
    ({"expires_in_days": None}, "expires_in_days"),
    ({"expires_in_days": True}, "expires_in_days"),
    ({"expires_in_days": "30"}, "expires_in_days"),
    ({"expires_in_days": 30.5}, "expires_in_days"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"id": str(uuid.uuid4())}, "id"),
    ({"token": "chosen-by-client"}, "token"),
    ({"created_by": "cli"}, "created_by"),
    ({"expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
    ({"scope": "admin"}, "scope"),
])
def test_bad_create_bodies_are_422_naming_the_field(
    changes: dict[str, Any], field: str, client: TestClient, admin: str, db: Session
) -> None:
    before = token_count(db)
    response = client.post("/v1/tokens", json={**READER_BODY, **changes}, headers=bearer(admin))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert any(field in [str(p) for p in e["loc"]] for e in problem["errors"]), problem
    assert token_count(db) == before
    event = audit_rows(db)[-1]
    assert (event.action, event.outcome, event.status_code) == ("token.create", "rejected", 422)


@pytest.mark.parametrize("missing", ["agency", "name", "scopes"])
def test_required_create_fields(missing: str, client: TestClient, admin: str) -> None:
    body = {k: v for k, v in READER_BODY.items() if k != missing}
    response = client.post("/v1/tokens", json=body, headers=bearer(admin))
    assert response.status_code == 422
    assert any(missing in e["loc"] for e in response.json()["errors"])


def test_no_token_for_an_inactive_agency(client: TestClient, admin: str, db: Session) -> None:
    assert client.patch("/v1/agencies/KASN", json={"active": False}, headers=bearer(admin)).status_code == 200
    before = token_count(db)
    response = client.post("/v1/tokens", json={**READER_BODY, "agency": "KASN"}, headers=bearer(admin))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "agency"]
    assert "inactive" in response.json()["errors"][0]["msg"]
    assert token_count(db) == before


def test_a_body_that_is_not_json_is_422(client: TestClient, admin: str) -> None:
    response = client.post("/v1/tokens", content=b"agency=BKN",
                           headers={**bearer(admin), "Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


# --- GET /v1/tokens ------------------------------------------------------------------------------

def insert_tokens(db: Session, agency: str, count: int, *, created_by: str = "cli") -> list[ApiToken]:
    """Rows straight into the table; groups of seven share a creation second, as a busy admin's would."""
    base = utcnow().replace(microsecond=0) - timedelta(days=1)
    rows = [
        ApiToken(id=uuid.uuid4(), agency_code=agency, name=f"bulk {i}", scopes=["violations:read"],
                 created_at=base + timedelta(seconds=i // 7), expires_at=base + timedelta(days=30),
                 created_by=created_by)
        for i in range(count)
    ]
    db.add_all(rows)
    db.commit()
    return rows


def walk(client: TestClient, admin: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of GET /v1/tokens, following next_cursor."""
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/tokens", params=query, headers=bearer(admin))
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        assert set(page) == {"items", "next_cursor"}
        yield page
        cursor = page["next_cursor"]
        if cursor is None:
            return


def test_keyset_pages_return_every_token_once_newest_first(
    client: TestClient, admin: str, db: Session
) -> None:
    rows = insert_tokens(db, "KEMENDAGRI", 120)
    pages = list(walk(client, admin, agency="KEMENDAGRI", limit=50))
    assert [len(p["items"]) for p in pages] == [50, 50, 20]
    ids = [item["id"] for page in pages for item in page["items"]]
    expected = sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)
    assert ids == [str(r.id) for r in expected]

    everything = [item["id"] for page in walk(client, admin, limit=50) for item in page["items"]]
    assert len(everything) == len(set(everything)) == 121
    assert token_id(admin) in everything
    # The listing reads are audited with every token id they returned.
    listed = [e for e in audit_rows(db) if e.action == "token.list"]
    assert sum(len(e.resource_ids) for e in listed) == 120 + 121


def test_items_carry_usage_and_revocation_but_never_the_value(
    client: TestClient, admin: str, db: Session
) -> None:
    created = create(client, admin)
    page = client.get("/v1/tokens", headers=bearer(admin)).json()
    assert page["next_cursor"] is None
    by_id = {item["id"]: item for item in page["items"]}
    assert set(by_id) == {created["id"], token_id(admin)}
    for item in page["items"]:
        assert set(item) == LISTED_FIELDS
        assert "token" not in item
    item = by_id[created["id"]]
    shared = CREATED_FIELDS - {"token"}
    assert {k: item[k] for k in shared} == {k: created[k] for k in shared}
    assert item["revoked_at"] is None and item["last_used_at"] is None
    assert by_id[token_id(admin)]["created_by"] == "cli"
    assert by_id[token_id(admin)]["last_used_at"] is not None, "the admin token has just been used"


def test_list_filters_by_agency_and_activity(client: TestClient, admin: str, db: Session) -> None:
    live = create(client, admin)
    revoked = create(client, admin, name="to revoke")
    expired = create(client, admin, name="to expire", agency="BAWASLU")
    assert client.delete(f"/v1/tokens/{revoked['id']}", headers=bearer(admin)).status_code == 204
    db.execute(update(ApiToken).where(ApiToken.id == uuid.UUID(expired["id"]))
               .values(expires_at=utcnow() - timedelta(minutes=1)))
    db.commit()

    def ids(**params: Any) -> set[str]:
        response = client.get("/v1/tokens", params=params, headers=bearer(admin))
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert ids(agency="KEMENDAGRI") == {live["id"], revoked["id"]}
    assert ids(agency="BAWASLU") == {expired["id"]}
    assert ids(agency="KASN") == set()
    assert ids(active="true") == {live["id"], token_id(admin)}
    assert ids(active="false") == {revoked["id"], expired["id"]}
    assert ids(agency="KEMENDAGRI", active="false") == {revoked["id"]}
    listed = client.get("/v1/tokens", params={"active": "false"}, headers=bearer(admin)).json()["items"]
    revoked_item = next(i for i in listed if i["id"] == revoked["id"])
    assert instant(revoked_item["revoked_at"]) <= datetime.now(UTC)
    assert client.get("/v1/tokens", params={"active": "maybe"}, headers=bearer(admin)).status_code == 422


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


MALFORMED_CURSORS = {
    "not-base64": "!!!!",
    "not-json": _b64(b"not json"),
    "not-a-list": _b64(b'{"a": 1}'),
    "wrong-arity": encode_cursor("2026-01-01T00:00:00+00:00"),
    "not-a-date": encode_cursor("yesterday", str(uuid.uuid4())),
    "date-is-a-number": encode_cursor(20260101, str(uuid.uuid4())),
    "not-a-uuid": encode_cursor("2026-01-01T00:00:00+00:00", "nope"),
    "uuid-is-a-number": encode_cursor("2026-01-01T00:00:00+00:00", 5),
    "uuid-is-a-list": encode_cursor("2026-01-01T00:00:00+00:00", ["x"]),
    "naive-datetime": encode_cursor("2026-01-01T00:00:00", str(uuid.uuid4())),
    "out-of-range-instant": encode_cursor("0001-01-01T00:00:00+01:00", str(uuid.uuid4())),
    "too-long": "A" * 600,
}


@pytest.mark.parametrize("name", list(MALFORMED_CURSORS))
def test_a_malformed_cursor_is_422(name: str, client: TestClient, admin: str) -> None:
    response = client.get("/v1/tokens", params={"cursor": MALFORMED_CURSORS[name]}, headers=bearer(admin))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert any("cursor" in e["loc"] for e in problem["errors"]), problem


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten"])
def test_limit_out_of_range_is_422(limit: str, client: TestClient, admin: str) -> None:
    response = client.get("/v1/tokens", params={"limit": limit}, headers=bearer(admin))
    assert response.status_code == 422
    assert any("limit" in e["loc"] for e in response.json()["errors"])


def test_limit_bounds_are_inclusive(client: TestClient, admin: str, db: Session) -> None:
    insert_tokens(db, "BAWASLU", 3)
    one = client.get("/v1/tokens", params={"limit": 1}, headers=bearer(admin)).json()
    assert len(one["items"]) == 1 and one["next_cursor"] is not None
    many = client.get("/v1/tokens", params={"limit": 200}, headers=bearer(admin)).json()
    assert len(many["items"]) == 4 and many["next_cursor"] is None


# --- GET and DELETE /v1/tokens/{id} --------------------------------------------------------------

def test_get_one_token(client: TestClient, admin: str, db: Session) -> None:
    created = create(client, admin)
    response = client.get(f"/v1/tokens/{created['id']}", headers=bearer(admin))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == LISTED_FIELDS
    assert body["id"] == created["id"] and body["created_by"] == token_id(admin)
    event = audit_rows(db)[-1]
    assert (event.action, event.resource_ids) == ("token.read", [created["id"]])

    missing = client.get(f"/v1/tokens/{uuid.uuid4()}", headers=bearer(admin))
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    malformed = client.get("/v1/tokens/not-a-uuid", headers=bearer(admin))
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["loc"] == ["path", "token_id"]


def test_last_used_at_is_set_once_the_token_is_used(client: TestClient, admin: str) -> None:
    created = create(client, admin)
    assert client.get(f"/v1/tokens/{created['id']}", headers=bearer(admin)).json()["last_used_at"] is None
    assert client.get("/v1/agencies", headers=bearer(created["token"])).status_code == 200
    used = client.get(f"/v1/tokens/{created['id']}", headers=bearer(admin)).json()["last_used_at"]
    assert used is not None
    assert instant(created["created_at"]) <= instant(used) <= datetime.now(UTC)


def test_revoke_is_204_twice_and_404_for_an_unknown_id(client: TestClient, admin: str, db: Session) -> None:
    created = create(client, admin)
    first = client.delete(f"/v1/tokens/{created['id']}", headers=bearer(admin))
    assert first.status_code == 204 and first.content == b""
    revoked_at = client.get(f"/v1/tokens/{created['id']}", headers=bearer(admin)).json()["revoked_at"]
    assert revoked_at is not None
    again = client.delete(f"/v1/tokens/{created['id']}", headers=bearer(admin))
    assert again.status_code == 204
    assert client.get(f"/v1/tokens/{created['id']}", headers=bearer(admin)).json()["revoked_at"] == revoked_at
    revocations = [e for e in audit_rows(db) if e.action == "token.revoke"]
    assert [(e.outcome, e.detail, e.resource_ids) for e in revocations] == [
        ("success", {"already_revoked": False}, [created["id"]]),
        ("success", {"already_revoked": True}, [created["id"]]),
    ]
    assert client.get("/v1/agencies", headers=bearer(created["token"])).status_code == 401

    unknown = client.delete(f"/v1/tokens/{uuid.uuid4()}", headers=bearer(admin))
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert client.delete("/v1/tokens/not-a-uuid", headers=bearer(admin)).status_code == 422


def test_an_admin_may_revoke_its_own_token(client: TestClient, admin: str) -> None:
    assert client.delete(f"/v1/tokens/{token_id(admin)}", headers=bearer(admin)).status_code == 204
    assert client.get("/v1/tokens", headers=bearer(admin)).status_code == 401


# --- who may call ---------------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/v1/tokens", "token.create"),
    ("GET", "/v1/tokens", "token.list"),
    ("GET", "/v1/tokens/{id}", "token.read"),
    ("DELETE", "/v1/tokens/{id}", "token.revoke"),
]


@pytest.mark.parametrize(("method", "path", "action"), ENDPOINTS)
def test_token_endpoints_need_a_token(method: str, path: str, action: str, client: TestClient, admin: str,
                                     db: Session) -> None:
    target = path.format(id=token_id(admin))
    response = client.request(method, target, json=READER_BODY if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "invalid_token"
    event = audit_rows(db)[-1]
    assert (event.action, event.outcome, event.actor_kind) == ("auth.failed", "denied", "anonymous")


@pytest.mark.parametrize(("method", "path", "action"), ENDPOINTS)
def test_token_endpoints_need_the_admin_scope(method: str, path: str, action: str, client: TestClient,
                                             admin: str, issue_token: TokenFactory, db: Session) -> None:
    everything_but_admin = issue_token("BKN", "violations:read", "violations:write", "audit:read")
    before = token_count(db)
    target = path.format(id=token_id(admin))
    response = client.request(method, target, json=READER_BODY if method == "POST" else None,
                              headers=bearer(everything_but_admin))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="admin"'
    event = audit_rows(db)[-1]
    assert (event.action, event.outcome, event.status_code) == (action, "denied", 403)
    assert event.actor_token_id == token_id(everything_but_admin)
    assert token_count(db) == before
    assert client.get("/v1/agencies", headers=bearer(admin)).status_code == 200, "nothing was revoked"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/tokens"), ("GET", "/v1/tokens"), ("GET", "/v1/tokens/{id}"), ("DELETE", "/v1/tokens/{id}"),
    ("POST", "/v1/agencies"), ("PATCH", "/v1/agencies/BKN"),
    ("GET", "/v1/audit/events"), ("GET", "/v1/audit/events/1"), ("GET", "/v1/audit/verify"),
    ("GET", "/v1/audit/export"),
])
def test_a_violations_read_token_cannot_administer_or_audit(
    method: str, path: str, client: TestClient, admin: str, issue_token: TokenFactory
) -> None:
    reader = issue_token("BAWASLU", "violations:read")
    assert client.get("/v1/agencies", headers=bearer(reader)).status_code == 200
    body = {"code": "DKPP", "name": "x"} if "agencies" in path else READER_BODY
    response = client.request(method, path.format(id=token_id(admin)), headers=bearer(reader),
                              json=body if method in {"POST", "PATCH"} else None)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "insufficient_scope"
