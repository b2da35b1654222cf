"""Tampering behind the API is found at the right seq by GET /v1/audit/verify and by `sbt audit verify`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, update

from app.audit.models import ChainHead
from app.config import Settings
from tests.audit.conftest import (
    EVENTS,
    AuditLog,
    Sbt,
    build_log,
    forged_row,
    insert_row,
    rehash,
    remove_events,
    rewind_head,
    stored_row,
    tampering,
)
from tests.conftest import TokenFactory, bearer

HEAD = 10  # build_log writes events 1..10


def edit_a_column(conn: Connection) -> int:
    conn.execute(update(EVENTS).where(EVENTS.c.seq == 4).values(path="/v1/forged"))
    return 4


def edit_and_recompute_its_hash(conn: Connection) -> int:
    conn.execute(update(EVENTS).where(EVENTS.c.seq == 4).values(client_ip="203.0.113.9"))
    rehash(conn, 4)
    return 5  # event 4 is self-consistent now; event 5 no longer links to it


def edit_a_json_column(conn: Connection) -> int:
    conn.execute(update(EVENTS).where(EVENTS.c.seq == 6).values(detail={"forged": True}))
    return 6


def break_a_column_so_it_no_longer_loads(conn: Connection) -> int:
    # resource_ids must be a JSON list; a number makes the row unloadable as an event.
    conn.exec_driver_sql("UPDATE audit_events SET resource_ids = '5' WHERE seq = 5")
    return 5


def remove_one_in_the_middle(conn: Connection) -> int:
    remove_events(conn, [4])
    return 4


def swap_two_seqs(conn: Connection) -> int:
    for old, new in ((3, -1), (6, 3), (-1, 6)):
        conn.execute(update(EVENTS).where(EVENTS.c.seq == old).values(seq=new))
    return 3


def insert_in_the_middle(conn: Connection) -> int:
    """Renumber 4.. up by one and put a forged event with a correct hash at 4; move the head row too."""
    for seq in range(HEAD, 3, -1):
        conn.execute(update(EVENTS).where(EVENTS.c.seq == seq).values(seq=seq + 1))
    insert_row(conn, forged_row(conn, 4, prev_hash=stored_row(conn, 3)["hash"], template_seq=3))
    conn.execute(update(ChainHead).where(ChainHead.id == 1).values(
        seq=HEAD + 1, hash=stored_row(conn, HEAD + 1)["hash"]))
    return 5  # the forged event verifies on its own; the one after it no longer does


def cut_off_the_end(conn: Connection) -> int:
    remove_events(conn, [8, 9, 10])  # the head row still says 10
    return 8


def rewrite_the_last_event_with_its_hash(conn: Connection) -> int:
    conn.execute(update(EVENTS).where(EVENTS.c.seq == HEAD).values(user_agent="forged"))
    rehash(conn, HEAD)  # nothing links to the last event, but the head row recorded its hash
    return HEAD


Tamper = Callable[[Connection], int]
CASES: list[Tamper] = [
    edit_a_column, edit_and_recompute_its_hash, edit_a_json_column, break_a_column_so_it_no_longer_loads,
    remove_one_in_the_middle, swap_two_seqs, insert_in_the_middle, cut_off_the_end,
    rewrite_the_last_event_with_its_hash,
]


def verify_over_http(client: TestClient, log: AuditLog, query: str = "") -> dict[str, object]:
    response = client.get(f"/v1/audit/verify{query}", headers=bearer(log.auditor))
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_an_untouched_log_verifies(client: TestClient, issue_token: TokenFactory, sbt: Sbt) -> None:
    log = build_log(client, issue_token)
    run = sbt("audit", "verify")
    assert (run.code, run.out) == (0, "")
    assert f"head seq {HEAD} " in run.err
    body = verify_over_http(client, log)
    head_hash = client.get(f"/v1/audit/events/{HEAD}", headers=bearer(log.auditor)).json()["hash"]
    assert body == {"ok": True, "checked": HEAD, "head": {"seq": HEAD, "hash": head_hash},
                    "first_invalid_seq": None}


@pytest.mark.parametrize("tamper", CASES, ids=lambda case: case.__name__)
def test_tampering_is_found_at_its_seq_by_cli_and_endpoint(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings, tamper: Tamper
) -> None:
    log = build_log(client, issue_token)
    with tampering(settings.database_url) as conn:
        first_bad = tamper(conn)

    run = sbt("audit", "verify")
    assert run.code == 1, run.err
    assert run.out == f"first bad seq: {first_bad}\n"

    body = verify_over_http(client, log)
    assert body["ok"] is False
    assert body["first_invalid_seq"] == first_bad
    assert body["head"]["seq"] == first_bad - 1  # type: ignore[index]


def test_an_event_appended_past_the_head_is_found_and_the_service_stops_serving(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings
) -> None:
    log = build_log(client, issue_token)
    with tampering(settings.database_url) as conn:
        insert_row(conn, forged_row(conn, HEAD + 1, prev_hash=stored_row(conn, HEAD)["hash"], template_seq=5))

    run = sbt("audit", "verify")
    assert (run.code, run.out) == (1, f"first bad seq: {HEAD + 1}\n")
    # The next event would take the seq the forged row holds: no event, so no answer (fail closed).
    response = client.get("/v1/audit/verify", headers=bearer(log.auditor))
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"


def test_a_range_is_verified_on_its_own(
    client: TestClient, issue_token: TokenFactory, settings: Settings
) -> None:
    log = build_log(client, issue_token)
    with tampering(settings.database_url) as conn:
        edit_a_column(conn)  # event 4
    assert verify_over_http(client, log, "?from_seq=5&to_seq=9")["ok"] is True
    body = verify_over_http(client, log, "?from_seq=2&to_seq=6")
    assert (body["ok"], body["first_invalid_seq"], body["checked"]) == (False, 4, 3)


def test_a_cut_end_with_the_head_row_rewound_passes_without_a_checkpoint(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings
) -> None:
    """The documented limit: someone who can also rewrite the head row hides a cut from the log alone;
    only a checkpoint kept elsewhere catches it (test_checkpoints.py)."""
    log = build_log(client, issue_token)
    with tampering(settings.database_url) as conn:
        remove_events(conn, [8, 9, 10])
        rewind_head(conn, 7)
    assert sbt("audit", "verify").code == 0
    assert verify_over_http(client, log)["ok"] is True


def test_text_that_is_not_utf8_is_a_bad_event_not_a_crash(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings, backend: str
) -> None:
    """SQLite keeps any bytes in a TEXT column; a value that is not UTF-8 cannot be read back as text, by
    the driver or the ORM. Verification names that event; a page of events holding it answers 500 with a
    problem saying why, not 503 as if the database were down. (PostgreSQL refuses such text on input.)"""
    if backend != "sqlite":
        pytest.skip("PostgreSQL stores only valid text in a UTF-8 database")
    log = build_log(client, issue_token)
    with tampering(settings.database_url) as conn:
        conn.exec_driver_sql(
            "UPDATE audit_events SET user_agent = CAST(X'6167656E74FF' AS TEXT) WHERE seq = 6")

    run = sbt("audit", "verify")
    assert (run.code, run.out) == (1, "first bad seq: 6\n"), run.err
    body = verify_over_http(client, log)
    assert (body["ok"], body["first_invalid_seq"], body["checked"]) == (False, 6, 6)

    response = client.get("/v1/audit/events?limit=100", headers=bearer(log.auditor))
    assert response.status_code == 500, response.text
    problem = response.json()
    assert problem["code"] == "internal_error"
    assert "not valid UTF-8" in problem["detail"]
    export = sbt("audit", "export")
    assert export.code == 2
    assert export.err.startswith("error: a stored row holds text that is not valid UTF-8"), export.err
    # Other events still read, and the service still records accesses.
    response = client.get("/v1/audit/events/5", headers=bearer(log.auditor))
    assert response.status_code == 200, response.text
    assert response.json()["seq"] == 5
