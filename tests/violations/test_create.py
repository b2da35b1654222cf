"""Creating records: the stored shape, validation of every field, and Idempotency-Key."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.clock import today_jakarta
from app.violations import service
from app.violations.schemas import ViolationOut
from tests.conftest import TokenFactory, audit_rows, bearer
from tests.violations.conftest import VALID_BODY, Api, body_with, count_rows, field_named

CASE_NUMBER = re.compile(r"^NET-(\d{4})-(\d{6})$")


def test_create_returns_201_location_etag_and_the_full_record(api: Api, db: Session) -> None:
    response = api.create("BAWASLU", body_with({"subject": {"nip": "19860926 201505 1 001"}}))
    assert response.status_code == 201, response.text
    record = response.json()
    assert response.headers["location"] == f"/v1/violations/{record['id']}"
    assert response.headers["etag"] == '"1"'
    assert "idempotent-replayed" not in response.headers
    match = CASE_NUMBER.match(record["case_number"])
    assert match and int(match.group(1)) == today_jakarta().year
    assert record["status"] == "reported" and record["version"] == 1
    assert record["reporting_agency"] == "BAWASLU"
    assert record["subject"]["nip"] == "198609262015051001"  # spaces stripped
    as_sent = ("election", "category", "description", "occurred_on", "source", "evidence")
    assert {k: record[k] for k in as_sent} == {k: VALID_BODY[k] for k in as_sent}
    assert record["recommendation"] is None and record["follow_up"] is None
    assert record["follow_up_due_on"] is None
    assert record["created_at"] == record["updated_at"] and record["created_at"].endswith("Z")
    # The body is exactly the published response model (nothing extra, nothing missing).
    assert ViolationOut.model_validate(record).model_dump(mode="json", exclude_none=True) == {
        k: v for k, v in record.items() if v is not None}
    assert api.get(record["id"]).json() == record
    events = audit_rows(db)
    create = events[-2]  # the last one is the GET above
    assert (create.action, create.outcome, create.resource_type, create.resource_ids) == (
        "violation.create", "success", "violation", [record["id"]])
    assert create.detail == {"case_number": record["case_number"], "version": 1}


def test_case_numbers_are_unique_and_counted_per_year(api: Api) -> None:
    numbers = [api.created()["case_number"] for _ in range(3)]
    sequence = [int(CASE_NUMBER.match(n).group(2)) for n in numbers]  # type: ignore[union-attr]
    assert len(set(numbers)) == 3 and sequence == sorted(sequence)


def test_reporting_needs_the_reporter_role(api: Api, client: TestClient, issue_token: TokenFactory) -> None:
    admin = issue_token("BKN", "admin")
    demoted = client.patch("/v1/agencies/KEMENPANRB", json={"roles": ["monitor"]}, headers=bearer(admin))
    assert demoted.status_code == 200
    response = api.create("KEMENPANRB")
    assert response.status_code == 403
    assert response.json()["code"] == "action_not_permitted"


def test_create_needs_a_token_and_the_write_scope(client: TestClient, issue_token: TokenFactory) -> None:
    assert client.post("/v1/violations", json=VALID_BODY).status_code == 401
    reader = issue_token("BAWASLU", "violations:read")
    response = client.post("/v1/violations", json=VALID_BODY, headers=bearer(reader))
    assert response.status_code == 403 and response.json()["code"] == "insufficient_scope"


def _future(days: int = 2) -> str:
    return (today_jakarta() + timedelta(days=days)).isoformat()


# (body, path of the field the 422 must name)
BAD_BODIES: list[tuple[dict[str, Any], tuple[str | int, ...]]] = [
    (body_with({"subject": {"nip": "12345"}}), ("subject", "nip")),
    (body_with({"subject": {"nip": "198613262015051001"}}), ("subject", "nip")),  # month 13
    (body_with({"subject": {"nip": "198609262015051000"}}), ("subject", "nip")),  # sequence 000
    (body_with({"subject": {"nip": "198609262000051001"}}), ("subject", "nip")),  # appointed at 13
    (body_with({"subject": {"nip": "198609262015053001"}}), ("subject", "nip")),  # sex digit 3
    (body_with({"subject": {"nip": "19860926201505100x", "employment_type": "PPPK"}}), ("subject", "nip")),
    (body_with({"subject": {"employment_type": "CPNS"}}), ("subject", "employment_type")),
    (body_with({"subject": {"name": "  "}}), ("subject", "name")),
    (body_with({"subject": {"position": "x" * 201}}), ("subject", "position")),
    (body_with({"subject": {"position_type": "kepala"}}), ("subject", "position_type")),
    (body_with({"subject": {"institution": ""}}), ("subject", "institution")),
    (body_with({"subject": {"region_code": "99"}}), ("subject", "region_code")),
    (body_with({"subject": {"region_code": "32.70"}}), ("subject", "region_code")),
    (body_with({"subject": {"region_code": "3216"}}), ("subject", "region_code")),
    (body_with({"subject": {"unit": "Dinas"}}), ("subject", "unit")),
    (body_with({"election": {"type": "pemilihan"}}), ("election", "type")),
    (body_with({"election": {"year": 2003}}), ("election", "year")),
    (body_with({"election": {"year": today_jakarta().year + 2}}), ("election", "year")),
    (body_with({"election": {"stage": "counting"}}), ("election", "stage")),
    (body_with(category="bribery"), ("category",)),
    (body_with(description=""), ("description",)),
    (body_with(description="x" * 10_001), ("description",)),
    (body_with(occurred_on=_future()), ("occurred_on",)),
    (body_with(occurred_on="2024-13-01"), ("occurred_on",)),
    (body_with(source="rumor"), ("source",)),
    (body_with(evidence=[{"kind": "url", "uri": "https://e.org/x"}] * 51), ("evidence",)),
    (body_with(evidence=[{"kind": "url", "uri": "ftp://e.org/x"}]), ("uri",)),
    (body_with(evidence=[{"kind": "url", "uri": "javascript:alert(1)"}]), ("uri",)),
    (body_with(evidence=[{"kind": "document", "name": "a.pdf", "sha256": "abc"}]), ("sha256",)),
    (body_with(evidence=[{"kind": "photo", "uri": "https://e.org/x"}]), ("evidence", 0)),
    (body_with({"subject": {"name": "Ahmad\u0000Fauzi"}}), ("subject", "name")),
    (body_with(description="nul \u0000"), ("description",)),
    (body_with(evidence=[{"kind": "document", "name": "a\u0000.pdf", "sha256": "a" * 64}]), ("name",)),
    (body_with(foo=1), ("foo",)),
    *[(body_with(**cast("dict[str, Any]", {owned: value})), (owned,)) for owned, value in [
        ("id", "8c4f7f1e-2a50-4b0e-9a52-6d3f0b3e1a11"), ("case_number", "NET-2024-000001"),
        ("status", "sanctioned"),
        ("version", 7), ("reporting_agency", "BKN"), ("recommendation", None), ("follow_up", None),
        ("follow_up_due_on", "2024-12-01"), ("created_at", "2024-01-01T00:00:00Z"),
        ("updated_at", "2024-01-01T00:00:00Z")]],
]


@pytest.mark.parametrize(("body", "path"), BAD_BODIES, ids=[".".join(map(str, p)) for _, p in BAD_BODIES])
def test_each_rejected_field_is_422_naming_it_and_nothing_is_stored(
    api: Api, db: Session, body: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    before = [count_rows(db, t) for t in ("violations", "violation_versions", "changes")]
    response = api.create("BAWASLU", body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert field_named(problem, *path), problem["errors"]
    assert [count_rows(db, t) for t in ("violations", "violation_versions", "changes")] == before
    assert audit_rows(db)[-1].outcome == "rejected"


def test_a_missing_required_field_is_named(api: Api) -> None:
    body = body_with()
    del body["subject"]["name"]
    del body["source"]
    problem = api.create("BAWASLU", body).json()
    assert field_named(problem, "subject", "name") and field_named(problem, "source")


def test_pppk_numbers_need_only_eighteen_digits(api: Api) -> None:
    pppk = {"employment_type": "PPPK", "nip": "000000000000000000"}
    record = api.created(body=body_with({"subject": pppk}))
    assert record["subject"]["nip"] == "000000000000000000"


# --- Idempotency-Key ----------------------------------------------------------------------------

def test_same_key_and_body_replays_the_original_response(api: Api, db: Session) -> None:
    first = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "bawaslu-2024-0001"})
    again = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "bawaslu-2024-0001"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"] and again.headers["etag"] == '"1"'
    assert count_rows(db, "violations") == 1 and count_rows(db, "changes") == 1
    replay_event = audit_rows(db)[-1]
    assert replay_event.action == "violation.create" and replay_event.resource_ids == [first.json()["id"]]
    assert replay_event.detail == {"idempotent_replay": True}


def test_replay_survives_later_changes_and_other_agencies_have_their_own_keys(api: Api) -> None:
    first = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "k"})
    record = first.json()
    assert api.act(record["id"], "BKN", {"action": "start_verification"}, 1).status_code == 200
    again = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "k"})
    assert again.json() == record  # the original response, not the record now
    other = api.create("KEMENDAGRI", VALID_BODY, **{"Idempotency-Key": "k"})
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert other.json()["id"] != record["id"]


def test_same_key_with_another_body_is_422_idempotency_key_reused(api: Api, db: Session) -> None:
    assert api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "k-1"}).status_code == 201
    response = api.create("BAWASLU", body_with(description="Lain."), **{"Idempotency-Key": "k-1"})
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert count_rows(db, "violations") == 1


def test_the_same_content_written_differently_is_the_same_body(api: Api) -> None:
    first = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "k-2"})
    spaced = body_with({"subject": {"nip": "19860926 201505 1 001"}})
    again = api.create("BAWASLU", dict(reversed(list(spaced.items()))), **{"Idempotency-Key": "k-2"})
    assert again.headers.get("idempotent-replayed") == "true" and again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize("key", ["", "x" * 256])
def test_idempotency_key_must_be_1_to_255_characters(api: Api, key: str) -> None:
    response = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": key})
    assert response.status_code == 422
    assert field_named(response.json(), "idempotency-key")


def test_a_rejected_create_does_not_use_up_its_key(api: Api, db: Session) -> None:
    assert api.create("BAWASLU", body_with(category="x"), **{"Idempotency-Key": "k-3"}).status_code == 422
    assert api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "k-3"}).status_code == 201
    assert count_rows(db, "idempotency_keys") == 1


def test_a_key_is_free_again_after_24_hours(api: Api, db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    first = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "daily"})
    later = datetime.now(UTC) + timedelta(hours=24, seconds=1)
    monkeypatch.setattr(service, "utcnow", lambda: later)
    again = api.create("BAWASLU", body_with(description="Laporan baru."), **{"Idempotency-Key": "daily"})
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert count_rows(db, "idempotency_keys") == 1
    within = api.create("BAWASLU", body_with(description="Laporan baru."), **{"Idempotency-Key": "daily"})
    assert within.headers.get("idempotent-replayed") == "true" and within.json()["id"] == again.json()["id"]


def test_ten_concurrent_creates_with_one_key_make_one_record(api: Api, db: Session) -> None:
    barrier = threading.Barrier(10)
    responses: list[Any] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        response = api.create("BAWASLU", VALID_BODY, **{"Idempotency-Key": "burst"})
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.json()["id"] for r in responses}) == 1
    replayed = sorted(r.headers.get("idempotent-replayed", "false") for r in responses)
    assert replayed == ["false"] + ["true"] * 9
    assert count_rows(db, "violations") == 1 and count_rows(db, "changes") == 1
