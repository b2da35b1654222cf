"""The workflow: every (action, status, agency) combination answers as SPEC §8's table says.

The expectations below are written out from SPEC §8 and §6 (default roles), not read from
app/violations/workflow.py, so a wrong entry in the service's table fails here.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.clock import today_jakarta
from tests.conftest import TokenFactory, audit_rows, bearer
from tests.violations.conftest import (
    ACTION_BODIES,
    AGENCIES,
    PATHS,
    Api,
    days_ago,
    field_named,
    recommendation,
)

STATUSES = list(PATHS)
OPEN = ["reported", "under_verification", "recommended", "data_blocked"]
VERIFIERS = {"BKN", "KASN"}  # SPEC §6 default roles
# action: (from statuses, resulting status, agencies allowed on a record BAWASLU reported)
TABLE: dict[str, tuple[set[str], str, set[str]]] = {
    "start_verification": ({"reported"}, "under_verification", VERIFIERS),
    "recommend": ({"under_verification"}, "recommended", VERIFIERS),
    "dismiss": ({"reported", "under_verification"}, "not_proven", VERIFIERS),
    "cancel": ({"reported", "under_verification"}, "cancelled", {"BAWASLU"}),
    "record_follow_up": ({"recommended", "data_blocked"}, "sanctioned", {"BKN", "KEMENDAGRI"}),
    "block_data": ({"recommended"}, "data_blocked", {"BKN"}),
    "mark_subject_departed": (set(OPEN), "subject_departed", {"BKN", "KASN"}),
}
CHANGED_FIELDS = {
    "recommend": {"status", "recommendation", "follow_up_due_on"},
    "record_follow_up": {"status", "follow_up"},
}


def _history(api: Api, violation_id: str) -> list[dict[str, Any]]:
    response = api.history(violation_id)
    assert response.status_code == 200
    return list(response.json()["items"])


@pytest.mark.parametrize("action", list(TABLE))
def test_every_status_and_agency_combination(api: Api, action: str) -> None:
    """Each of the 9 statuses by 5 agencies: exactly 200 with the new status and history entry, or 403
    action_not_permitted, or 409 invalid_transition, as the table says; a refused action changes nothing."""
    sources, target, allowed = TABLE[action]
    body = ACTION_BODIES[action]
    probes = {status: api.drive(status) for status in STATUSES}  # shared by all refused attempts
    for status in STATUSES:
        for agency in AGENCIES:
            record = probes[status]
            permitted, possible = agency in allowed, status in sources
            if permitted and possible:
                record = api.drive(status)
            response = api.act(record["id"], agency, body, record["version"])
            where = f"{action} on {status} by {agency}"
            if not permitted:
                assert (response.status_code, response.json()["code"]) == (403, "action_not_permitted"), where
            elif not possible:
                assert (response.status_code, response.json()["code"]) == (409, "invalid_transition"), where
            else:
                assert response.status_code == 200, f"{where}: {response.text}"
                after = response.json()
                assert after["status"] == target and after["version"] == record["version"] + 1, where
                assert response.headers["etag"] == f'"{after["version"]}"'
                entry = _history(api, record["id"])[-1]
                assert (entry["version"], entry["action"], entry["agency"]) == (
                    after["version"], action, agency)
                assert entry["changes"]["status"] == {"from": status, "to": target}
                assert set(entry["changes"]) == CHANGED_FIELDS.get(action, {"status"}), where
                assert entry["reason"] == body.get("reason") and entry["note"] is None
                continue
            assert api.get(record["id"]).json() == record, f"{where} changed the record"


def test_dismiss_can_also_reject(api: Api) -> None:
    record = api.drive("under_verification")
    reject = {"action": "dismiss", "outcome": "rejected", "reason": "bukan ASN"}
    response = api.act(record["id"], "BKN", reject, 2)
    assert response.status_code == 200 and response.json()["status"] == "rejected"


def test_cancel_belongs_to_whichever_agency_reported(api: Api) -> None:
    record = api.drive("reported", reporter="KEMENDAGRI")
    assert api.act(record["id"], "BAWASLU", ACTION_BODIES["cancel"], 1).status_code == 403
    assert api.act(record["id"], "KEMENDAGRI", ACTION_BODIES["cancel"], 1).json()["status"] == "cancelled"


def test_roles_are_data_an_admin_can_change(api: Api, client: TestClient, issue_token: TokenFactory) -> None:
    record = api.drive("reported")
    assert api.act(record["id"], "KEMENPANRB", ACTION_BODIES["start_verification"], 1).status_code == 403
    admin = issue_token("BKN", "admin")
    client.patch("/v1/agencies/KEMENPANRB", json={"roles": ["reporter", "verifier"]}, headers=bearer(admin))
    assert api.act(record["id"], "KEMENPANRB", ACTION_BODIES["start_verification"], 1).status_code == 200


def test_recommend_stores_the_letter_and_the_due_date(api: Api) -> None:
    record = api.drive("under_verification")
    issued = date.fromisoformat(days_ago(3))
    response = api.act(record["id"], "KASN", {"action": "recommend", "note": "rapat gugus tugas 12",
                                              "recommendation": {**recommendation(3), "by": "KASN"}}, 2)
    assert response.status_code == 422 and field_named(response.json(), "recommendation", "by")
    given = recommendation(3)
    response = api.act(record["id"], "KASN", {"action": "recommend", "note": "rapat gugus tugas 12",
                                              "recommendation": given}, 2)
    after = response.json()
    assert after["recommendation"] == {**given, "issued_by": "KASN"}
    assert after["follow_up_due_on"] == (issued + timedelta(days=14)).isoformat()
    entry = _history(api, record["id"])[-1]
    assert entry["note"] == "rapat gugus tugas 12"


def test_follow_up_days_is_a_setting(make_settings: Any, agency_tokens: dict[str, str]) -> None:
    from app.main import create_app

    with TestClient(create_app(make_settings(follow_up_days=10)), raise_server_exceptions=False) as client:
        api = Api(client, agency_tokens)
        record = api.drive("under_verification")
        recommend_today = {"action": "recommend", "recommendation": recommendation(0)}
        after = api.act(record["id"], "BKN", recommend_today, 2).json()
        assert after["follow_up_due_on"] == (today_jakarta() + timedelta(days=10)).isoformat()


def test_block_data_only_after_the_due_date(api: Api) -> None:
    record = api.drive("under_verification")
    due_today = api.act(record["id"], "BKN", {"action": "recommend", "recommendation": recommendation(14)}, 2)
    assert due_today.json()["follow_up_due_on"] == today_jakarta().isoformat()
    response = api.act(record["id"], "BKN", ACTION_BODIES["block_data"], 3)
    assert response.status_code == 409 and response.json()["code"] == "invalid_transition"
    # Once blocked, the PPK can still act: the follow-up lifts the case to sanctioned.
    overdue = api.drive("data_blocked")
    response = api.act(overdue["id"], "KEMENDAGRI", ACTION_BODIES["record_follow_up"], overdue["version"])
    assert response.json()["status"] == "sanctioned"
    given = ACTION_BODIES["record_follow_up"]["follow_up"]
    assert response.json()["follow_up"] == {**given, "recorded_by": "KEMENDAGRI"}


FUTURE = (today_jakarta() + timedelta(days=2)).isoformat()
BAD_ACTIONS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({}, ("action",)),
    ({"action": "approve"}, ("action",)),
    ({"action": "recommend"}, ("recommendation",)),
    ({"action": "recommend", "recommendation": {**recommendation(), "issued_on": FUTURE}}, ("issued_on",)),
    ({"action": "recommend", "recommendation": {**recommendation(), "sanction": "fine"}}, ("sanction",)),
    ({"action": "recommend", "recommendation": {**recommendation(), "issued_by": "BKN"}}, ("issued_by",)),
    ({"action": "record_follow_up", "follow_up": {**ACTION_BODIES["record_follow_up"]["follow_up"],
                                                  "decided_on": FUTURE}}, ("decided_on",)),
    ({"action": "record_follow_up", "follow_up": {"sanction": "dismissal"}}, ("decree_number",)),
    ({"action": "dismiss", "outcome": "cancelled", "reason": "x"}, ("outcome",)),
    ({"action": "dismiss", "outcome": "rejected"}, ("reason",)),
    ({"action": "cancel", "reason": ""}, ("reason",)),
    ({"action": "start_verification", "status": "recommended"}, ("status",)),
    ({"action": "start_verification", "reason": "x"}, ("reason",)),
    ({"action": "block_data", "note": "x" * 2001}, ("note",)),
]


@pytest.mark.parametrize(("body", "path"), BAD_ACTIONS, ids=[".".join(p) for _, p in BAD_ACTIONS])
def test_bad_action_bodies_are_422_naming_the_field(
    api: Api, body: dict[str, Any], path: tuple[str, ...]
) -> None:
    record = api.drive("under_verification")
    response = api.act(record["id"], "BKN", body, 2)
    assert response.status_code == 422, response.text
    assert field_named(response.json(), "body", *path) or field_named(response.json(), *path), response.json()
    assert api.get(record["id"]).json() == record


def test_action_checks_answer_in_spec_order(api: Api) -> None:
    """404, 428, 422, 403 (role), 412, 409."""
    final = api.drive("sanctioned")
    version = final["version"]
    start = ACTION_BODIES["start_verification"]
    assert api.act(str(uuid.uuid4()), "KEMENPANRB", {}, None).status_code == 404
    assert api.act(final["id"], "KEMENPANRB", {}, None).status_code == 428
    assert api.act(final["id"], "KEMENPANRB", {}, 1).status_code == 422
    assert api.act(final["id"], "KEMENPANRB", start, 1).status_code == 403
    assert api.act(final["id"], "BKN", start, 1).status_code == 412
    assert api.act(final["id"], "BKN", start, version).status_code == 409
    response = api.client.post(f"/v1/violations/{final['id']}/actions", content=b"action=cancel",
                               headers=api.headers("BKN", **{"If-Match": f'"{version}"',
                                                             "Content-Type": "text/plain"}))
    assert response.status_code == 415


def test_actions_need_a_token_and_the_write_scope(
    api: Api, client: TestClient, issue_token: TokenFactory
) -> None:
    record = api.drive("reported")
    url, start = f"/v1/violations/{record['id']}/actions", ACTION_BODIES["start_verification"]
    assert client.post(url, json=start, headers={"If-Match": '"1"'}).status_code == 401
    reader = issue_token("BKN", "violations:read")
    denied = client.post(url, json=start, headers={**bearer(reader), "If-Match": '"1"'})
    assert denied.status_code == 403 and denied.json()["code"] == "insufficient_scope"


def test_history_and_versions_keep_every_state(api: Api, db: Session) -> None:
    record = api.drive("sanctioned")
    history = _history(api, record["id"])
    assert [(h["version"], h["action"], h["agency"]) for h in history] == [
        (1, "create", "BAWASLU"), (2, "start_verification", "BKN"), (3, "recommend", "BKN"),
        (4, "record_follow_up", "KEMENDAGRI")]
    assert history[0]["changes"] == {} and all(h["token_id"] for h in history)
    states = []
    for n in range(1, 5):
        response = api.version(record["id"], n, "KASN")
        assert response.status_code == 200 and response.headers["etag"] == f'"{n}"'
        states.append(response.json())
    assert [s["status"] for s in states] == ["reported", "under_verification", "recommended", "sanctioned"]
    assert [s["version"] for s in states] == [1, 2, 3, 4]
    assert states[-1] == api.get(record["id"]).json()
    assert states[1]["recommendation"] is None and states[2]["recommendation"] is not None
    for missing in (5, 99):
        assert api.version(record["id"], missing).status_code == 404
    assert api.version(record["id"], 0).status_code == 422
    assert api.version(record["id"], 2**31).status_code == 422  # beyond the column, not a database error
    unknown = str(uuid.uuid4())
    assert api.history(unknown).status_code == 404 and api.version(unknown, 1).status_code == 404
    api.history(record["id"], "KEMENPANRB")
    event = audit_rows(db)[-1]
    assert (event.action, event.actor_agency, event.resource_ids) == (
        "violation.history", "KEMENPANRB", [record["id"]])


def test_action_audit_detail_says_what_changed(api: Api, db: Session) -> None:
    record = api.drive("reported")
    api.act(record["id"], "BKN", ACTION_BODIES["start_verification"], 1)
    event = audit_rows(db)[-1]
    assert (event.action, event.resource_ids) == ("violation.action", [record["id"]])
    assert event.detail == {"action": "start_verification", "from": "reported", "to": "under_verification",
                            "version": 2}
    api.act(record["id"], "BKN", ACTION_BODIES["start_verification"], 1)  # stale: refused, still linked
    refused = audit_rows(db)[-1]
    assert (refused.outcome, refused.status_code, refused.resource_ids) == ("rejected", 412, [record["id"]])
    api.act(record["id"], "KEMENPANRB", ACTION_BODIES["cancel"], 2)
    denied = audit_rows(db)[-1]
    assert (denied.outcome, denied.status_code, denied.resource_ids) == ("denied", 403, [record["id"]])
