"""GET /v1/audit/subjects/{nip}: the processing trail of one civil servant, and nobody else's."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import TokenFactory, bearer
from tests.violations.conftest import body_with

NIP_A = "198609262015051001"
NIP_B = "199001152019032002"
NIP_C = "197512312000121003"


def _create(client: TestClient, token: str, nip: str) -> str:
    response = client.post("/v1/violations", json=body_with({"subject": {"nip": nip}}), headers=bearer(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _trail(client: TestClient, auditor: str, nip: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        response = client.get(f"/v1/audit/subjects/{nip}", params=query, headers=bearer(auditor))
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items


def test_trail_has_creates_reads_and_list_reads_of_that_nip_only(
    client: TestClient, issue_token: TokenFactory
) -> None:
    bawaslu = issue_token("BAWASLU", "violations:read", "violations:write")
    bkn = issue_token("BKN", "violations:read")
    kemendagri = issue_token("KEMENDAGRI", "violations:read")
    auditor = issue_token("BKN", "audit:read")
    a1, a2 = _create(client, bawaslu, NIP_A), _create(client, bawaslu, NIP_A)
    b1 = _create(client, bawaslu, NIP_B)
    assert client.get(f"/v1/violations/{a1}", headers=bearer(bkn)).status_code == 200
    assert client.get(f"/v1/violations/{b1}", headers=bearer(kemendagri)).status_code == 200
    listed = client.get("/v1/violations", headers=bearer(kemendagri))
    assert {item["id"] for item in listed.json()["items"]} == {a1, a2, b1}

    walked = _trail(client, auditor, NIP_A, limit=2)
    seqs = [e["seq"] for e in walked]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Walking the trail page by page is itself recorded against these records, so later pages show the
    # auditor's own earlier page requests; leave those aside here.
    trail = [e for e in walked if e["action"] != "audit.subject"]
    assert {e["actor"]["agency"] for e in walked if e["action"] == "audit.subject"} == {"BKN"}
    assert [(e["action"], e["actor"]["agency"]) for e in trail] == [
        ("violation.create", "BAWASLU"),
        ("violation.create", "BAWASLU"),
        ("violation.read", "BKN"),
        ("violation.list", "KEMENDAGRI"),
    ]
    assert all({a1, a2} & set(e["resource_ids"]) for e in trail)
    # Nothing that touched only NIP_B's record, e.g. Kemendagri's read of it.
    assert not any(e["resource_ids"] == [b1] for e in trail)

    trail_b = [e["action"] for e in _trail(client, auditor, NIP_B)]
    assert trail_b == ["violation.create", "violation.read", "violation.list"]


def test_a_corrected_nip_keeps_the_record_in_the_old_subjects_trail(
    client: TestClient, issue_token: TokenFactory
) -> None:
    bawaslu = issue_token("BAWASLU", "violations:read", "violations:write")
    auditor = issue_token("BKN", "audit:read")
    record = _create(client, bawaslu, NIP_A)
    patched = client.patch(
        f"/v1/violations/{record}",
        json={"subject": {"nip": NIP_C}},
        headers=bearer(bawaslu) | {"If-Match": '"1"'},
    )
    assert patched.status_code == 200, patched.text
    old = [e["action"] for e in _trail(client, auditor, NIP_A) if e["action"] != "audit.subject"]
    new = [e["action"] for e in _trail(client, auditor, NIP_C) if e["action"] != "audit.subject"]
    assert old == new == ["violation.create", "violation.update"]


def test_the_trail_request_is_audited_against_the_records(
    client: TestClient, issue_token: TokenFactory
) -> None:
    bawaslu = issue_token("BAWASLU", "violations:write")
    auditor = issue_token("BKN", "audit:read")
    record = _create(client, bawaslu, NIP_A)
    _trail(client, auditor, NIP_A)
    second = _trail(client, auditor, NIP_A)
    assert second[-1]["action"] == "audit.subject"
    assert second[-1]["resource_ids"] == [record]
    assert second[-1]["detail"] == {"nip": NIP_A, "records": 1}
    # The NIP as it is printed, with spaces between its groups, is the same civil servant.
    printed = _trail(client, auditor, f"{NIP_A[:8]} {NIP_A[8:14]} {NIP_A[14]} {NIP_A[15:]}")
    assert [e["seq"] for e in printed[:len(second)]] == [e["seq"] for e in second]
    assert printed[-1]["detail"] == {"nip": NIP_A, "records": 1}


def test_unknown_nip_is_an_empty_trail_and_bad_input_is_refused(
    client: TestClient, issue_token: TokenFactory
) -> None:
    auditor = issue_token("BKN", "audit:read")
    reader = issue_token("BKN", "violations:read")
    empty = client.get(f"/v1/audit/subjects/{NIP_B}", headers=bearer(auditor))
    assert empty.status_code == 200 and empty.json() == {"items": [], "next_cursor": None}
    assert client.get("/v1/audit/subjects/12345", headers=bearer(auditor)).status_code == 422
    assert client.get(f"/v1/audit/subjects/{NIP_A}1", headers=bearer(auditor)).status_code == 422
    assert client.get(f"/v1/audit/subjects/{NIP_A[:17]}x", headers=bearer(auditor)).status_code == 422
    assert client.get(f"/v1/audit/subjects/{NIP_A}?cursor=!!", headers=bearer(auditor)).status_code == 422
    assert client.get(f"/v1/audit/subjects/{NIP_A}", headers=bearer(reader)).status_code == 403
    assert client.get(f"/v1/audit/subjects/{NIP_A}").status_code == 401
