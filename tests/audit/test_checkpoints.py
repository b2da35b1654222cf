"""Signed checkpoints: issued over HTTP and by the CLI, verifiable with the JWKS alone, kept, listed,
issued periodically when the head moves, and used by `sbt audit verify --checkpoint` to prove cuts."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jose import jws  # type: ignore[import-untyped]  # python-jose ships no type information
from jose.exceptions import JOSEError  # type: ignore[import-untyped]
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit import checkpoints
from app.audit.models import AuditCheckpoint
from app.auth.jwt import TokenCodec
from app.auth.keys import generate_key_file, load_signing_key
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.main import create_app
from tests.audit.conftest import (
    EVENTS,
    AuditLog,
    Sbt,
    build_log,
    remove_events,
    rewind_head,
    rewrite_from,
    tampering,
)
from tests.conftest import TokenFactory, audit_rows, bearer


def payload_of(compact: str) -> dict[str, object]:
    segment = compact.split(".")[1]
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return data


def take_checkpoint(client: TestClient, log: AuditLog) -> str:
    response = client.get("/v1/audit/checkpoint", headers=bearer(log.auditor))
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"jws"}
    compact: str = response.json()["jws"]
    return compact


def save(tmp_path: Path, compact: str, name: str = "checkpoint.jws") -> str:
    path = tmp_path / name
    path.write_text(compact + "\n")
    return str(path)


def verify_with(client: TestClient, log: AuditLog, checkpoint: str) -> dict[str, Any]:
    response = client.get("/v1/audit/verify", params={"checkpoint": checkpoint}, headers=bearer(log.auditor))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def other_codec(tmp_path: Path, settings: Settings) -> TokenCodec:
    path = tmp_path / "other-key.pem"
    generate_key_file(path, "ES256")
    return TokenCodec(load_signing_key(path), issuer=settings.jwt_issuer, audience=settings.jwt_audience)


# --- issuing and checking signatures ---------------------------------------------------------------

def test_a_checkpoint_states_the_head_and_verifies_with_the_published_jwks_alone(
    client: TestClient, issue_token: TokenFactory, db: Session
) -> None:
    log = build_log(client, issue_token)
    compact = take_checkpoint(client, log)

    jwks = client.get("/.well-known/jwks.json").json()
    (key,) = jwks["keys"]
    header = jws.get_unverified_header(compact)
    assert header == {"alg": key["alg"], "typ": "sbt-checkpoint+jws", "kid": key["kid"]}
    statement = json.loads(jws.verify(compact, jwks, algorithms=[key["alg"]]))
    head = client.get(f"/v1/audit/events/{log.head}", headers=bearer(log.auditor)).json()
    assert set(statement) == {"seq", "hash", "issued_at"}
    assert (statement["seq"], statement["hash"]) == (log.head, head["hash"])
    assert statement["issued_at"].endswith("Z")

    issued = audit_rows(db)[log.head]  # the checkpoint request's own event follows the head it signed
    assert (issued.action, issued.outcome, issued.resource_type) == ("audit.checkpoint", "success",
                                                                      "audit_checkpoint")
    assert issued.detail["seq"] == log.head and issued.detail["hash"] == head["hash"]


def test_a_checkpoint_does_not_verify_with_another_key(
    client: TestClient, issue_token: TokenFactory, settings: Settings, tmp_path: Path
) -> None:
    compact = take_checkpoint(client, build_log(client, issue_token))
    stranger = other_codec(tmp_path, settings).key.public_jwk
    with pytest.raises(JOSEError):
        jws.verify(compact, {"keys": [stranger]}, algorithms=[stranger["alg"]])
    with pytest.raises(JOSEError):  # nor once the payload is changed under the original signature
        header, _, signature = compact.split(".")
        forged = base64.urlsafe_b64encode(json.dumps({**payload_of(compact), "seq": 1}).encode()).rstrip(b"=")
        jws.verify(f"{header}.{forged.decode()}.{signature}", client.get("/.well-known/jwks.json").json(),
                   algorithms=["ES256"])


def test_each_checkpoint_is_stored_and_listed_newest_first_page_by_page(
    client: TestClient, issue_token: TokenFactory
) -> None:
    log = build_log(client, issue_token)
    issued = [take_checkpoint(client, log) for _ in range(5)]

    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(f"/v1/audit/checkpoints{query}", headers=bearer(log.auditor))
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["jws"] for item in seen] == issued[::-1]
    ids = [item["id"] for item in seen]
    assert ids == sorted(set(ids), reverse=True)
    for item in seen:
        assert set(item) == {"id", "seq", "hash", "issued_at", "jws"}
        statement = payload_of(str(item["jws"]))
        assert (item["seq"], item["hash"], item["issued_at"]) == (
            statement["seq"], statement["hash"], statement["issued_at"])
    # Each checkpoint request is itself an event, so each one states a later head.
    assert [item["seq"] for item in seen] == [log.head + n for n in (4, 3, 2, 1, 0)]


def test_checkpoint_endpoints_need_audit_read_and_a_well_formed_cursor(
    client: TestClient, issue_token: TokenFactory
) -> None:
    log = build_log(client, issue_token)
    for path in ("/v1/audit/checkpoint", "/v1/audit/checkpoints"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=bearer("not.a.token")).status_code == 401
        denied = client.get(path, headers=bearer(log.reader))
        assert denied.status_code == 403 and denied.json()["code"] == "insufficient_scope"
    for query in ("?cursor=garbage", "?limit=0", "?limit=201", "?cursor=WyJ4Il0"):
        response = client.get(f"/v1/audit/checkpoints{query}", headers=bearer(log.auditor))
        assert response.status_code == 422, query
        assert response.json()["code"] == "validation_error"


# --- the CLI ---------------------------------------------------------------------------------------

def test_cli_checkpoint_prints_only_the_jws_records_it_and_is_audited(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, db: Session, tmp_path: Path
) -> None:
    log = build_log(client, issue_token)
    run = sbt("audit", "checkpoint")
    assert run.code == 0, run.err
    compact = run.out.strip()
    assert run.out == compact + "\n" and compact.count(".") == 2
    jwks = client.get("/.well-known/jwks.json").json()
    statement = json.loads(jws.verify(compact, jwks, algorithms=["ES256"]))
    assert statement["seq"] == log.head

    db.rollback()
    stored = db.scalars(select(AuditCheckpoint)).one()
    assert (stored.jws, stored.seq) == (compact, log.head)
    event = audit_rows(db)[-1]
    assert (event.seq, event.action, event.actor_kind, event.outcome) == (
        log.head + 1, "audit.checkpoint", "cli", "success")
    assert (event.method, event.path, event.status_code) == (None, None, None)
    assert event.detail == {"checkpoint_id": stored.id, "seq": log.head, "hash": stored.hash}

    assert sbt("audit", "verify", "--checkpoint", save(tmp_path, compact)).code == 0


def test_an_untouched_log_holds_its_checkpoint_and_more_events_after_it_are_fine(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, tmp_path: Path
) -> None:
    log = build_log(client, issue_token)
    path = save(tmp_path, take_checkpoint(client, log))
    for _ in range(3):
        client.get("/v1/agencies", headers=bearer(log.reader))
    run = sbt("audit", "verify", "--checkpoint", path)
    assert (run.code, run.out) == (0, "")
    assert "checkpoint seq 10 holds" in run.err
    checkpoint = Path(path).read_text().strip()
    body = verify_with(client, log, checkpoint)
    assert (body["ok"], body["first_invalid_seq"]) == (True, None)


@pytest.mark.parametrize("rewind_head_row", [False, True], ids=["head_row_untouched", "head_row_rewound"])
def test_a_cut_end_is_found_at_the_first_missing_seq_given_a_checkpoint(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings, tmp_path: Path,
    rewind_head_row: bool,
) -> None:
    log = build_log(client, issue_token)
    client.get("/v1/agencies", headers=bearer(log.reader))  # seq 11
    checkpoint = take_checkpoint(client, log)  # states seq 11; its own event is 12
    assert payload_of(checkpoint)["seq"] == 11
    path = save(tmp_path, checkpoint)
    with tampering(settings.database_url) as conn:
        remove_events(conn, list(range(9, 13)))
        if rewind_head_row:
            rewind_head(conn, 8)

    # Without the checkpoint, only the head row can tell; with it, the cut is always found.
    assert sbt("audit", "verify").code == (0 if rewind_head_row else 1)
    run = sbt("audit", "verify", "--checkpoint", path)
    assert (run.code, run.out) == (1, "first bad seq: 9\n")
    body = verify_with(client, log, checkpoint)
    assert (body["ok"], body["first_invalid_seq"], body["head"]["seq"]) == (False, 9, 8)


def test_a_log_shorter_than_the_checkpoint_is_caught_even_when_nothing_else_is_wrong(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings, tmp_path: Path
) -> None:
    """Cut exactly the events after the checkpointed one... and then the checkpointed one too."""
    log = build_log(client, issue_token)
    path = save(tmp_path, take_checkpoint(client, log))  # states seq 10; its event is 11
    with tampering(settings.database_url) as conn:
        remove_events(conn, [10, 11])
        rewind_head(conn, 9)
    run = sbt("audit", "verify", "--checkpoint", path)
    assert (run.code, run.out) == (1, "first bad seq: 10\n")


def test_a_chain_rewritten_after_the_checkpoint_is_found_at_the_checkpoint(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings, tmp_path: Path
) -> None:
    log = build_log(client, issue_token)
    checkpoint = take_checkpoint(client, log)  # states seq 10; its event is 11
    for _ in range(2):
        client.get("/v1/agencies", headers=bearer(log.reader))  # 12, 13
    path = save(tmp_path, checkpoint)
    with tampering(settings.database_url) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == 4).values(client_ip="198.51.100.7"))
        rewrite_from(conn, 4, 13)  # every hash and link recomputed, head row moved: self-consistent

    assert sbt("audit", "verify").code == 0  # the log alone cannot tell
    run = sbt("audit", "verify", "--checkpoint", path)
    assert (run.code, run.out) == (1, "first bad seq: 10\n")
    body = verify_with(client, log, checkpoint)
    assert (body["ok"], body["first_invalid_seq"]) == (False, 10)


def test_a_rewrite_before_the_checkpoint_is_named_even_when_the_chain_also_breaks_later(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings, tmp_path: Path
) -> None:
    log = build_log(client, issue_token)
    path = save(tmp_path, take_checkpoint(client, log))  # states seq 10; its event is 11
    for _ in range(2):
        client.get("/v1/agencies", headers=bearer(log.reader))  # 12, 13
    with tampering(settings.database_url) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == 4).values(path="/v1/x"))
        rewrite_from(conn, 4, 13)
        conn.execute(update(EVENTS).where(EVENTS.c.seq == 12).values(path="/v1/y"))  # not rehashed
    assert sbt("audit", "verify").out == "first bad seq: 12\n"
    run = sbt("audit", "verify", "--checkpoint", path)
    assert (run.code, run.out) == (1, "first bad seq: 10\n")


# --- unusable checkpoint files: exit 2 ------------------------------------------------------------

def test_unusable_checkpoint_files_exit_2(
    client: TestClient, issue_token: TokenFactory, sbt: Sbt, settings: Settings, tmp_path: Path
) -> None:
    log = build_log(client, issue_token)
    good = take_checkpoint(client, log)
    statement = payload_of(good)
    own = client.app.state.runtime.codec  # type: ignore[attr-defined]
    binary = tmp_path / "binary.jws"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    header, payload, signature = good.split(".")
    cases = {
        "missing": str(tmp_path / "nope.jws"),
        "directory": str(tmp_path),
        "empty": save(tmp_path, "", "empty.jws"),
        "garbage": save(tmp_path, "this is not a checkpoint", "garbage.jws"),
        "binary": str(binary),
        "other_key": save(tmp_path, other_codec(tmp_path, settings).sign_statement(
            statement, typ=checkpoints.CHECKPOINT_TYPE), "other.jws"),
        "bad_signature": save(tmp_path, f"{header}.{payload}.{signature[:-4]}AAAA", "badsig.jws"),
        "access_token": save(tmp_path, log.auditor, "token.jws"),
        "other_type": save(tmp_path, own.sign_statement(statement, typ="something+jws"), "type.jws"),
        "bad_seq": save(tmp_path, own.sign_statement({**statement, "seq": "ten"},
                                                     typ=checkpoints.CHECKPOINT_TYPE), "seq.jws"),
        "bad_hash": save(tmp_path, own.sign_statement({**statement, "hash": "xyz"},
                                                      typ=checkpoints.CHECKPOINT_TYPE), "hash.jws"),
    }
    for name, path in cases.items():
        run = sbt("audit", "verify", "--checkpoint", path)
        assert (run.code, run.out) == (2, ""), name
        assert "checkpoint" in run.err, name
    response = client.get("/v1/audit/verify", params={"checkpoint": "garbage"}, headers=bearer(log.auditor))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "checkpoint"]


# --- the periodic task ---------------------------------------------------------------------------

def test_the_periodic_round_records_only_when_the_head_moved(
    client: TestClient, issue_token: TokenFactory, settings: Settings, db: Session
) -> None:
    log = build_log(client, issue_token)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    first = checkpoints.record_if_head_moved(runtime.sessions, runtime.codec)
    assert first is not None and first.seq == log.head
    assert checkpoints.record_if_head_moved(runtime.sessions, runtime.codec) is None
    client.get("/v1/agencies", headers=bearer(log.reader))
    second = checkpoints.record_if_head_moved(runtime.sessions, runtime.codec)
    assert second is not None and second.seq == log.head + 1
    db.rollback()
    assert db.scalar(select(func.count()).select_from(AuditCheckpoint)) == 2
    jwks = client.get("/.well-known/jwks.json").json()
    assert json.loads(jws.verify(second.jws, jwks, algorithms=["ES256"]))["seq"] == log.head + 1


def test_the_periodic_round_refuses_to_bless_a_log_cut_below_its_last_checkpoint(
    client: TestClient, issue_token: TokenFactory, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    build_log(client, issue_token)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert checkpoints.record_if_head_moved(runtime.sessions, runtime.codec) is not None
    with tampering(settings.database_url) as conn:
        remove_events(conn, [9, 10])
        rewind_head(conn, 8)
    with caplog.at_level(logging.ERROR, logger="sbt.audit"):
        assert checkpoints.record_if_head_moved(runtime.sessions, runtime.codec) is None
    assert "behind checkpoint seq 10" in caplog.text


def test_no_checkpoint_is_signed_for_a_head_the_log_does_not_hold(
    client: TestClient, issue_token: TokenFactory, settings: Settings, sbt: Sbt
) -> None:
    log = build_log(client, issue_token)
    with tampering(settings.database_url) as conn:
        remove_events(conn, [10])  # the head row still says 10
    run = sbt("audit", "checkpoint")
    assert (run.code, run.out) == (2, "")
    assert "does not match" in run.err
    response = client.get("/v1/audit/checkpoint", headers=bearer(log.auditor))
    assert response.status_code == 500
    assert response.json()["code"] == "audit_chain_inconsistent"


def test_the_periodic_task_runs_with_the_app_when_an_interval_is_set(
    settings: Settings, make_settings: object
) -> None:
    with TestClient(create_app(settings)) as client:
        assert "checkpoint_task" not in client.app.state.runtime.extras  # type: ignore[attr-defined]
    app = create_app(make_settings(checkpoint_interval_seconds=3600))  # type: ignore[operator]
    with TestClient(app) as client:
        task = client.app.state.runtime.extras["checkpoint_task"]  # type: ignore[attr-defined]
        assert not task.done()
    assert task.cancelled()


def test_the_first_periodic_round_on_an_empty_log_does_nothing(settings: Settings) -> None:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        codec = TokenCodec(load_signing_key(settings.key_file), issuer="sbt", audience="sbt-api")
        assert checkpoints.record_if_head_moved(make_session_factory(engine), codec) is None
    finally:
        engine.dispose()


def test_a_checkpoint_of_the_empty_log_holds_afterwards(sbt: Sbt, tmp_path: Path) -> None:
    run = sbt("audit", "checkpoint")  # a fresh database: seq 0, the genesis hash; its own event is 1
    assert run.code == 0, run.err
    assert payload_of(run.out.strip())["seq"] == 0
    verified = sbt("audit", "verify", "--checkpoint", save(tmp_path, run.out.strip()))
    assert (verified.code, verified.out) == (0, "")
