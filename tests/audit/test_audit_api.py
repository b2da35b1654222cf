"""The auditor's read endpoints: filters, order, keyset pages, export, and their 401/403/404/422 answers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jose import jwt  # type: ignore[import-untyped]  # python-jose ships no type information

from tests.audit.conftest import AuditLog, Sbt, build_log
from tests.conftest import TokenFactory, audit_rows, bearer

Event = dict[str, Any]
ENDPOINTS = ["/v1/audit/events", "/v1/audit/events/1", "/v1/audit/verify", "/v1/audit/export",
             "/v1/audit/checkpoint", "/v1/audit/checkpoints"]


def token_id(token: str) -> str:
    claims: dict[str, Any] = jwt.get_unverified_claims(token)
    return str(claims["jti"])


def get_json(client: TestClient, log: AuditLog, path: str, **params: object) -> Any:
    response = client.get(path, params=params, headers=bearer(log.auditor))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def log(client: TestClient, issue_token: TokenFactory) -> AuditLog:
    log = build_log(client, issue_token)
    reader = token_id(log.reader)
    assert client.get(f"/v1/tokens/{reader}", headers=bearer(log.auditor)).status_code == 200  # seq 11
    log.head = 11
    return log


def snapshot(client: TestClient, log: AuditLog) -> list[Event]:
    events: list[Event] = get_json(client, log, "/v1/audit/events", order="asc", limit=200)["items"]
    assert [e["seq"] for e in events] == list(range(1, log.head + 1))
    return events


def test_every_listed_event_hashes_by_the_published_rule(client: TestClient, log: AuditLog) -> None:
    for event in snapshot(client, log):
        body = {k: v for k, v in event.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == event["hash"]
        assert get_json(client, log, f"/v1/audit/events/{event['seq']}") == event


def test_filters_return_exactly_the_matching_events(client: TestClient, log: AuditLog) -> None:
    events = snapshot(client, log)
    reader = token_id(log.reader)
    fifth = events[4]["occurred_at"]
    ninth = events[8]["occurred_at"]
    cases: list[tuple[dict[str, str], Callable[[Event], bool]]] = [
        ({"agency": "BAWASLU"}, lambda e: e["actor"]["agency"] == "BAWASLU"),
        ({"agency": "KASN"}, lambda e: False),
        ({"token_id": reader}, lambda e: e["actor"]["token_id"] == reader),
        ({"action": "agency.list"}, lambda e: e["action"] == "agency.list"),
        ({"action": "token.create"}, lambda e: e["action"] == "token.create"),
        ({"outcome": "denied"}, lambda e: e["outcome"] == "denied"),
        ({"outcome": "rejected"}, lambda e: e["outcome"] == "rejected"),
        ({"resource_id": reader}, lambda e: reader in e["resource_ids"]),
        ({"since": fifth}, lambda e: e["occurred_at"] >= fifth),
        ({"until": ninth}, lambda e: e["occurred_at"] < ninth),
        ({"since": fifth, "until": ninth}, lambda e: fifth <= e["occurred_at"] < ninth),
        ({"agency": "BAWASLU", "outcome": "success"},
         lambda e: e["actor"]["agency"] == "BAWASLU" and e["outcome"] == "success"),
    ]
    for params, matches in cases:
        expected = [e["seq"] for e in events if matches(e)]
        for order in ("asc", "desc"):
            items = get_json(client, log, "/v1/audit/events", order=order, limit=200, **params)["items"]
            # Later events are this test's own queries; judge the filter on the snapshot.
            got = [e["seq"] for e in items if e["seq"] <= log.head]
            assert got == (expected if order == "asc" else expected[::-1]), (params, order)
            assert all(matches(e) for e in items if e["seq"] <= log.head)
    assert [e["seq"] for e in events if e["resource_ids"] and reader in e["resource_ids"]] == [2, 11]


def test_default_order_is_newest_first(client: TestClient, log: AuditLog) -> None:
    items = get_json(client, log, "/v1/audit/events", limit=5)["items"]
    seqs = [e["seq"] for e in items]
    assert seqs == sorted(seqs, reverse=True) and seqs[0] >= log.head


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_keyset_pages_visit_every_event_exactly_once(client: TestClient, log: AuditLog, order: str) -> None:
    expected = [3, 4, 5, 6, 10]  # the agency.list events
    seen: list[int] = []
    pages = 0
    cursor = None
    while True:
        params: dict[str, object] = {"action": "agency.list", "order": order, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = get_json(client, log, "/v1/audit/events", **params)
        pages += 1
        assert 1 <= len(page["items"]) <= 2
        seen.extend(e["seq"] for e in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == (expected if order == "asc" else expected[::-1])


def test_paging_the_whole_log_while_it_grows_skips_and_repeats_nothing(
    client: TestClient, log: AuditLog
) -> None:
    for order in ("asc", "desc"):
        seen: list[int] = []
        cursor = None
        for _ in range(50):
            params: dict[str, object] = {"order": order, "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = get_json(client, log, "/v1/audit/events", **params)
            seen.extend(e["seq"] for e in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert cursor is None
        if order == "asc":  # each page request adds an event; the walk still ends and stays gapless
            assert seen == list(range(1, len(seen) + 1))
        else:  # newest first: events written during the walk are newer than its first page
            assert seen == list(range(seen[0], 0, -1))


def test_export_streams_ndjson_of_the_log_and_is_itself_audited(
    client: TestClient, log: AuditLog, sbt: Sbt, db: Any
) -> None:
    events = snapshot(client, log)  # its own event is seq 12
    response = client.get("/v1/audit/export", headers=bearer(log.auditor))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[:log.head] == events
    assert [e["seq"] for e in lines] == list(range(1, log.head + 2))
    export_event = audit_rows(db)[log.head + 1]
    assert (export_event.action, export_event.resource_ids) == ("audit.export", [])
    assert export_event.detail == {"since": None, "until": None, "to_seq": log.head + 1}

    ranged = client.get("/v1/audit/export", params={"since": events[4]["occurred_at"]},
                        headers=bearer(log.auditor))
    got = [json.loads(line)["seq"] for line in ranged.text.splitlines()]
    expected = [e["seq"] for e in events if e["occurred_at"] >= events[4]["occurred_at"]]
    assert got[:len(expected)] == expected and all(seq > log.head for seq in got[len(expected):])

    inverted = sbt("audit", "export", "--since", "2026-12-02T00:00:00Z", "--until", "2026-12-01T00:00:00Z")
    assert (inverted.code, inverted.out, inverted.err) == (2, "", "error: --until is before --since\n")

    run = sbt("audit", "export")
    assert run.code == 0
    cli_lines = [json.loads(line) for line in run.out.splitlines()]
    assert cli_lines[:log.head] == events
    assert audit_rows(db)[-1].action == "audit.export"


def test_audit_endpoints_need_a_valid_token(client: TestClient, log: AuditLog) -> None:
    for path in ENDPOINTS:
        missing = client.get(path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == "Bearer"
        forged = client.get(path, headers=bearer(log.auditor[:-4] + "AAAA"))
        assert forged.status_code == 401, path
        assert forged.json()["code"] == "invalid_token"


def test_audit_endpoints_need_the_audit_read_scope(
    client: TestClient, log: AuditLog, issue_token: TokenFactory
) -> None:
    almost = issue_token("BKN", "violations:read", "violations:write", "admin")
    for token in (log.reader, almost):
        for path in ENDPOINTS:
            response = client.get(path, headers=bearer(token))
            assert response.status_code == 403, path
            assert response.json()["code"] == "insufficient_scope"
    denied = get_json(client, log, "/v1/audit/events", outcome="denied", limit=200)["items"]
    assert {e["action"] for e in denied if e["status_code"] == 403} >= {
        "audit.query", "audit.read", "audit.verify", "audit.export", "audit.checkpoint"}


def test_an_unknown_seq_is_404(client: TestClient, log: AuditLog) -> None:
    response = client.get("/v1/audit/events/999999", headers=bearer(log.auditor))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/audit/events?limit=0", "limit"),
    ("/v1/audit/events?limit=201", "limit"),
    ("/v1/audit/events?cursor=not-a-cursor", "cursor"),
    ("/v1/audit/events?outcome=maybe", "outcome"),
    ("/v1/audit/events?order=sideways", "order"),
    ("/v1/audit/events?token_id=not-a-uuid", "token_id"),
    ("/v1/audit/events?resource_id=42", "resource_id"),
    ("/v1/audit/events?since=yesterday", "since"),
    ("/v1/audit/events?until=2026-13-01T00:00:00Z", "until"),
    ("/v1/audit/events?agency=" + "A" * 33, "agency"),
    ("/v1/audit/events/0", "seq"),
    ("/v1/audit/events/first", "seq"),
    ("/v1/audit/verify?from_seq=0", "from_seq"),
    ("/v1/audit/verify?to_seq=-1", "to_seq"),
    ("/v1/audit/verify?from_seq=5&to_seq=3", "to_seq"),
    ("/v1/audit/verify?checkpoint=abc", "checkpoint"),
    ("/v1/audit/export?since=soon", "since"),
    ("/v1/audit/events?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z", "until"),
    ("/v1/audit/export?since=2026-12-02T00:00:00%2B07:00&until=2026-12-01T00:00:00Z", "until"),
    ("/v1/audit/checkpoints?limit=500", "limit"),
])
def test_bad_query_values_are_422_naming_the_field(
    client: TestClient, log: AuditLog, path: str, field: str
) -> None:
    response = client.get(path, headers=bearer(log.auditor))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert any(field in [str(part) for part in error["loc"]] for error in problem["errors"]), problem
