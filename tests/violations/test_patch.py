"""PATCH: JSON merge patch of a record's content, with If-Match, permissions and the order of checks."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import TokenFactory, audit_rows, bearer
from tests.violations.conftest import Api, count_rows, days_ago, field_named


def test_merge_patch_changes_only_what_it_names_and_bumps_the_version(api: Api, db: Session) -> None:
    record = api.created()
    patch = {"subject": {"name": "Ahmad Fauzi, S.Pd.", "nip": "19860926 201505 1 002"},
             "category": "partisan_photo", "evidence": [{"kind": "url", "uri": "https://e.org/1"}]}
    response = api.patch(record["id"], "BAWASLU", patch, 1)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    updated = response.json()
    assert updated["version"] == 2 and updated["updated_at"] > record["updated_at"]
    assert updated["subject"] == {**record["subject"], "name": "Ahmad Fauzi, S.Pd.",
                                  "nip": "198609262015051002"}
    assert updated["category"] == "partisan_photo" and updated["evidence"] == patch["evidence"]
    touched = ("subject", "category", "evidence", "version", "updated_at")
    assert {k: v for k, v in updated.items() if k not in touched} == {
        k: v for k, v in record.items() if k not in touched}
    history = api.history(record["id"]).json()["items"]
    assert history[-1]["action"] == "update" and history[-1]["agency"] == "BAWASLU"
    assert history[-1]["changes"] == {
        "subject.nip": {"from": "198609262015051001", "to": "198609262015051002"},
        "subject.name": {"from": "Ahmad Fauzi", "to": "Ahmad Fauzi, S.Pd."},
        "category": {"from": "social_media_engagement", "to": "partisan_photo"},
        "evidence": {"from": record["evidence"], "to": patch["evidence"]},
    }
    event = audit_rows(db)[-2]
    assert event.action == "violation.update" and event.resource_ids == [record["id"]]
    assert event.detail == {"version": 2, "changed": ["category", "evidence", "subject.name", "subject.nip"]}


def test_plain_json_is_accepted_and_null_removes_an_optional_member(api: Api) -> None:
    record = api.created()
    response = api.patch(record["id"], "BKN", {"evidence": None}, 1,
                         content_type="application/json; charset=utf-8")
    assert response.status_code == 200, response.text
    assert response.json()["evidence"] == []


def test_a_patch_that_changes_nothing_makes_no_new_version(api: Api, db: Session) -> None:
    record = api.created()
    feed_before = count_rows(db, "changes")
    response = api.patch(record["id"], "BAWASLU", {"category": record["category"]}, 1)
    assert response.status_code == 200 and response.headers["etag"] == '"1"'
    assert response.json() == record
    assert count_rows(db, "changes") == feed_before


def test_other_media_types_are_415(api: Api) -> None:
    record = api.created()
    for content_type in ("text/plain", "application/json-patch+json", "application/x-www-form-urlencoded"):
        response = api.patch(record["id"], "BAWASLU", {"category": "other"}, 1, content_type=content_type)
        assert response.status_code == 415, content_type
        assert response.json()["code"] == "unsupported_media_type"


BAD_PATCHES: list[tuple[Any, tuple[str | int, ...]]] = [
    ({"status": "sanctioned"}, ("status",)),
    ({"version": 9}, ("version",)),
    ({"id": str(uuid.uuid4())}, ("id",)),
    ({"reporting_agency": "BKN"}, ("reporting_agency",)),
    ({"case_number": "NET-2024-000001"}, ("case_number",)),
    ({"source": "public_report"}, ("source",)),
    ({"recommendation": {"sanction": "dismissal"}}, ("recommendation",)),
    ({"follow_up_due_on": "2030-01-01"}, ("follow_up_due_on",)),
    ({"created_at": "2024-01-01T00:00:00Z"}, ("created_at",)),
    ({"colour": "red"}, ("colour",)),
    ({"subject": {"nip": "123"}}, ("subject", "nip")),
    ({"subject": {"employment_type": "PPPK", "nip": "12"}}, ("subject", "nip")),
    ({"subject": {"region_code": "32.00"}}, ("subject", "region_code")),
    ({"subject": {"name": None}}, ("subject", "name")),
    ({"subject": {"hobby": "x"}}, ("subject", "hobby")),
    ({"subject": None}, ("subject",)),
    ({"election": {"year": 1999}}, ("election", "year")),
    ({"category": "gossip"}, ("category",)),
    ({"description": ""}, ("description",)),
    ({"occurred_on": "2999-01-01"}, ("occurred_on",)),
    ({"evidence": [{"kind": "url", "uri": "file:///etc/passwd"}]}, ("evidence", 0, "url", "uri")),
    ({"evidence": "none"}, ("evidence",)),
    ([{"op": "replace", "path": "/category", "value": "other"}], ()),
    ("category", ()),
]


@pytest.mark.parametrize(("patch", "path"), BAD_PATCHES,
                         ids=[".".join(map(str, p)) or "body" for _, p in BAD_PATCHES])
def test_each_rejected_field_is_422_naming_it_and_nothing_changes(
    api: Api, db: Session, patch: Any, path: tuple[str | int, ...]
) -> None:
    record = api.created()
    versions_before = count_rows(db, "violation_versions")
    response = api.patch(record["id"], "BAWASLU", patch, 1)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert field_named(problem, "body", *path), problem["errors"]
    assert api.get(record["id"]).json() == record
    assert count_rows(db, "violation_versions") == versions_before


def test_invalid_json_is_422(api: Api) -> None:
    record = api.created()
    headers = api.headers("BAWASLU", **{"If-Match": '"1"', "Content-Type": "application/merge-patch+json"})
    response = api.client.patch(f"/v1/violations/{record['id']}", content=b"{not json", headers=headers)
    assert response.status_code == 422 and field_named(response.json(), "body")


def test_only_the_reporting_agency_or_a_verifier_may_patch(api: Api) -> None:
    record = api.created("BAWASLU")
    for agency in ("KEMENDAGRI", "KEMENPANRB"):
        response = api.patch(record["id"], agency, {"description": "Diubah."}, 1)
        assert response.status_code == 403 and response.json()["code"] == "action_not_permitted"
    assert api.patch(record["id"], "KASN", {"description": "Diubah oleh verifikator."}, 1).status_code == 200
    assert api.patch(record["id"], "BAWASLU", {"description": "Diubah pelapor."}, 2).status_code == 200


def test_if_match_is_required_and_must_be_current(api: Api) -> None:
    record = api.created()
    missing = api.patch(record["id"], "BAWASLU", {"description": "x"}, None)
    assert missing.status_code == 428 and missing.json()["code"] == "precondition_required"
    assert api.patch(record["id"], "BAWASLU", {"description": "x"}, "*").status_code == 428
    for stale in ('"2"', 'W/"1"', "1", '"0", "3"'):
        response = api.patch(record["id"], "BAWASLU", {"description": "x"}, stale)
        assert response.status_code == 412, stale
        assert response.json()["code"] == "precondition_failed"
    assert api.patch(record["id"], "BAWASLU", {"description": "x"}, '"5", "1"').status_code == 200


def test_a_final_record_is_409_record_final(api: Api) -> None:
    record = api.drive("cancelled")
    response = api.patch(record["id"], "BAWASLU", {"description": "x"}, record["version"])
    assert response.status_code == 409 and response.json()["code"] == "record_final"


def test_checks_answer_in_spec_order(api: Api, client: TestClient, issue_token: TokenFactory) -> None:
    """404, 428, 422, 403 (role), 412, 409: each request below fails every later check too."""
    final = api.drive("cancelled")  # version 2, final: would be 409
    unknown = str(uuid.uuid4())
    bad = {"status": "x"}
    good = {"description": "y"}
    assert api.patch(unknown, "KEMENDAGRI", bad, None).status_code == 404
    assert api.patch(final["id"], "KEMENDAGRI", bad, None).status_code == 428
    assert api.patch(final["id"], "KEMENDAGRI", bad, 1).status_code == 422
    assert api.patch(final["id"], "KEMENDAGRI", good, 1).status_code == 403
    assert api.patch(final["id"], "BAWASLU", good, 1).status_code == 412
    assert api.patch(final["id"], "BAWASLU", good, 2).status_code == 409
    reader = issue_token("BAWASLU", "violations:read")  # the scope check comes before all of them
    assert client.patch(f"/v1/violations/{unknown}", json=bad, headers=bearer(reader)).status_code == 403
    assert client.patch(f"/v1/violations/{unknown}", json=bad).status_code == 401


def test_sixteen_parallel_patches_with_one_if_match_give_one_200_and_fifteen_412(
    api: Api, db: Session
) -> None:
    record = api.created()
    barrier = threading.Barrier(16)
    statuses: list[int] = []
    lock = threading.Lock()

    def patch(n: int) -> None:
        barrier.wait()
        response = api.patch(record["id"], "BAWASLU" if n % 2 else "BKN", {"description": f"Versi {n}."}, 1)
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=patch, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [412] * 15
    current = api.get(record["id"]).json()
    assert current["version"] == 2
    history = api.history(record["id"]).json()["items"]
    assert [h["version"] for h in history] == [1, 2]
    assert count_rows(db, "changes") == 2


def test_patch_needs_a_token_and_the_write_scope(
    api: Api, client: TestClient, issue_token: TokenFactory
) -> None:
    record = api.created()
    url = f"/v1/violations/{record['id']}"
    assert client.patch(url, json={"description": "x"}, headers={"If-Match": '"1"'}).status_code == 401
    reader = issue_token("BAWASLU", "violations:read")
    denied = client.patch(url, json={"description": "x"}, headers={**bearer(reader), "If-Match": '"1"'})
    assert denied.status_code == 403 and denied.json()["code"] == "insufficient_scope"


def test_an_issued_date_is_not_patchable_into_the_future_but_the_past_is_fine(api: Api) -> None:
    record = api.created()
    assert api.patch(record["id"], "BAWASLU", {"occurred_on": days_ago(3)}, 1).status_code == 200
