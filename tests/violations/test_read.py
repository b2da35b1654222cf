"""Reading records: one record with ETags, filtered lists, keyset pages, and what the audit log keeps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.pagination import encode_cursor
from app.violations import service
from tests.conftest import TokenFactory, audit_rows, bearer
from tests.violations.conftest import Api, body_with, field_named, recommendation


def test_get_returns_a_strong_etag_and_304_when_it_matches(api: Api, db: Session) -> None:
    record = api.created()
    response = api.get(record["id"])
    assert response.status_code == 200 and response.headers["etag"] == '"1"'
    assert response.json() == record
    for header in ('"1"', 'W/"1"', '"7", "1"', "*"):
        not_modified = api.get(record["id"], **{"If-None-Match": header})
        assert not_modified.status_code == 304, header
        assert not_modified.headers["etag"] == '"1"' and not_modified.content == b""
    assert api.get(record["id"], **{"If-None-Match": '"2"'}).status_code == 200
    event = audit_rows(db)[-1]
    assert (event.action, event.status_code, event.resource_ids) == ("violation.read", 200, [record["id"]])


def test_unknown_and_malformed_ids_are_404(api: Api) -> None:
    for violation_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = api.get(violation_id)
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_x_purpose_is_stored_in_the_audit_event(api: Api, db: Session) -> None:
    record = api.created()
    api.get(record["id"], **{"X-Purpose": "klarifikasi kasus untuk rapat gugus tugas"})
    assert audit_rows(db)[-1].purpose == "klarifikasi kasus untuk rapat gugus tugas"
    assert api.get(record["id"], **{"X-Purpose": "x" * 201}).status_code == 422


READ_ENDPOINTS = ["/v1/violations", "/v1/violations/{id}", "/v1/violations/{id}/history",
                  "/v1/violations/{id}/versions/1", "/v1/changes"]


@pytest.mark.parametrize("path", READ_ENDPOINTS)
def test_reads_need_a_token_and_the_read_scope(
    api: Api, client: TestClient, issue_token: TokenFactory, path: str
) -> None:
    url = path.format(id=api.created()["id"])
    missing = client.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    forged = client.get(url, headers=bearer("not.a.token"))
    assert forged.status_code == 401
    assert forged.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    auditor = issue_token("BKN", "audit:read")
    denied = client.get(url, headers=bearer(auditor))
    assert denied.status_code == 403 and denied.json()["code"] == "insufficient_scope"


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "cursor=%%%", "sort=name", "status=open",
                                   "category=theft", "region_code=3", "region_code=99", "nip=123",
                                   "q=" + "x" * 201, "election_year=1999", "updated_since=yesterday",
                                   "overdue=maybe", "q=a%00b", "reporting_agency=BKN%00"])
def test_bad_list_parameters_are_422_naming_them(api: Api, query: str) -> None:
    response = api.client.get(f"/v1/violations?{query}", headers=api.headers("BKN"))
    assert response.status_code == 422, query
    assert field_named(response.json(), query.split("=")[0])


def test_a_cursor_from_another_sort_is_refused(api: Api) -> None:
    cursor = encode_cursor("-created_at", datetime.now(UTC).isoformat(), str(uuid.uuid4()))
    response = api.client.get(f"/v1/violations?sort=updated_at&cursor={cursor}", headers=api.headers("BKN"))
    assert response.status_code == 422 and field_named(response.json(), "cursor")


def _ids(api: Api, query: str) -> list[str]:
    response = api.client.get(f"/v1/violations?{query}", headers=api.headers("BKN"))
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_filters(api: Api) -> None:
    bekasi = api.created()
    surabaya = api.created("KEMENDAGRI", body_with(
        {"subject": {"nip": "199001012015012003", "name": "Siti Rahayu", "region_code": "35.78",
                     "institution": "Pemerintah Kota Surabaya"},
         "election": {"type": "pemilu", "year": 2024, "stage": "quiet_period"}},
        category="partisan_photo", description="Berfoto dengan 50% simbol_jari"))
    province = api.created(body=body_with({"subject": {"region_code": "32"}}, source="public_report"))
    verified = api.act(province["id"], "BKN", {"action": "start_verification"}, 1).json()
    assert set(_ids(api, "")) == {bekasi["id"], surabaya["id"], province["id"]}
    assert set(_ids(api, "status=reported")) == {bekasi["id"], surabaya["id"]}
    both = {bekasi["id"], surabaya["id"], verified["id"]}
    assert set(_ids(api, "status=reported&status=under_verification")) == both
    assert _ids(api, "category=partisan_photo") == [surabaya["id"]]
    assert _ids(api, "reporting_agency=KEMENDAGRI") == [surabaya["id"]]
    assert set(_ids(api, "region_code=32")) == {bekasi["id"], province["id"]}
    assert _ids(api, "region_code=32.16") == [bekasi["id"]]
    assert _ids(api, "region_code=35") == [surabaya["id"]]
    assert _ids(api, "election_type=pemilu") == [surabaya["id"]]
    assert _ids(api, "election_year=2024&election_type=pilkada&status=reported") == [bekasi["id"]]
    assert _ids(api, "nip=19900101%202015012%20003") == [surabaya["id"]]
    assert _ids(api, "q=RAHAYU") == [surabaya["id"]]
    assert _ids(api, "q=kota%20surabaya") == [surabaya["id"]]
    assert _ids(api, "q=50%25") == [surabaya["id"]]  # % is text, not a wildcard
    assert _ids(api, "q=simbol_jari") == [surabaya["id"]]
    assert _ids(api, "q=s_mbol") == []
    assert len(_ids(api, "q=facebook")) == 2
    since = verified["updated_at"].replace("Z", "+00:00")
    assert _ids(api, f"updated_since={since.replace('+', '%2B')}") == [province["id"]]


def test_overdue_means_recommended_with_the_due_date_passed(api: Api) -> None:
    overdue = api.drive("recommended")  # issued 30 days ago, due 16 days ago
    fresh = api.drive("under_verification")
    recommend_today = {"action": "recommend", "recommendation": recommendation(0)}
    fresh = api.act(fresh["id"], "BKN", recommend_today, 2).json()
    blocked = api.drive("data_blocked")
    assert _ids(api, "overdue=true") == [overdue["id"]]
    assert set(_ids(api, "overdue=false")) == {fresh["id"], blocked["id"]}


def test_list_reads_record_every_returned_id_in_the_audit_event(api: Api, db: Session) -> None:
    created = [api.created()["id"] for _ in range(3)]
    response = api.client.get("/v1/violations?limit=2", headers=api.headers("BKN", **{"X-Purpose": "rekap"}))
    page = [item["id"] for item in response.json()["items"]]
    event = audit_rows(db)[-1]
    assert (event.action, event.resource_type, event.purpose) == ("violation.list", "violation", "rekap")
    assert event.resource_ids == page and len(page) == 2 and set(page) <= set(created)


@pytest.fixture
def few_instants(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """Freeze the service clock to three instants, eight records each, so many timestamps are equal."""
    base = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    instants = [base + timedelta(seconds=i // 8) for i in range(24)]
    handed_out: list[datetime] = []

    def frozen() -> datetime:
        handed_out.append(instants[len(handed_out)])
        return handed_out[-1]

    monkeypatch.setattr(service, "utcnow", frozen)
    yield handed_out


@pytest.mark.parametrize("sort", ["-updated_at", "updated_at", "-created_at", "created_at"])
def test_keyset_walk_with_equal_timestamps_returns_each_record_once_in_order(
    api: Api, few_instants: list[datetime], sort: str
) -> None:
    for _ in range(24):
        api.created()
    assert len(set(few_instants)) == 3
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = f"sort={sort}&limit=5" + (f"&cursor={cursor}" if cursor else "")
        body = api.client.get(f"/v1/violations?{query}", headers=api.headers("BKN")).json()
        seen.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)) == 24
    field = sort.lstrip("-")
    expected = sorted(seen, key=lambda item: (item[field], item["id"]), reverse=sort.startswith("-"))
    assert ids == [item["id"] for item in expected]
