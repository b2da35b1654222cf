"""Faults inside one process: the database goes away and comes back, PostgreSQL kills the service's
connections mid-run, the audit insert fails. Never a 500, never data without its audit event."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import app.audit.writer
import app.middleware
from app.agencies.models import Agency
from app.audit.models import AuditEvent
from app.config import Settings
from app.runtime import Runtime
from tests.conftest import PG_URL, TokenFactory, bearer
from tests.hardening.conftest import problem, serve
from tests.hardening.servers import proxied

AGENCY_NAMES = ("Badan Kepegawaian Negara", "Badan Pengawas Pemilihan Umum")


def audit_count(db: Session) -> int:
    db.rollback()
    return int(db.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def chain_ok(client: TestClient, token: str) -> bool:
    response = client.get("/v1/audit/verify", headers=bearer(token))
    assert response.status_code == 200, response.text
    return bool(response.json()["ok"])


def assert_outage(client: TestClient, token: str) -> None:
    problem(client.get("/v1/agencies", headers=bearer(token)), 503, "service_unavailable")
    refused = client.post("/v1/agencies", json={"code": "DOWN", "name": "x"}, headers=bearer(token))
    problem(refused, 503, "service_unavailable")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_database_outage_answers_503_then_recovers_by_itself(
    backend: str, settings: Settings, make_settings: Callable[..., Settings], issue_token: TokenFactory,
    tmp_path: Path, db: Session,
) -> None:
    token = issue_token("BKN", "admin", "audit:read")
    if backend == "sqlite":
        # A database file that vanishes (an unmounted volume): new connections cannot open it.
        home = tmp_path / "volume"
        home.mkdir()
        path = home / "sbt.db"
        db.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))  # the token row, out of the WAL into the file
        shutil.copyfile(make_url(settings.database_url).database or "", path)
        app_settings = make_settings(database_url=f"sqlite:///{path}")
        with serve(app_settings) as client:
            assert client.get("/v1/agencies", headers=bearer(token)).status_code == 200
            runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
            runtime.engine.dispose()  # the open connections die with the volume
            home.rename(tmp_path / "elsewhere")
            assert_outage(client, token)
            (tmp_path / "elsewhere").rename(home)
            assert client.get("/v1/agencies", headers=bearer(token)).status_code == 200
            assert client.get("/readyz").status_code == 200
            created = client.post("/v1/agencies", json={"code": "BACK", "name": "x"}, headers=bearer(token))
            assert created.status_code == 201, created.text
            assert chain_ok(client, token)
        return
    url = make_url(settings.database_url)
    with proxied(url.host or "127.0.0.1", url.port or 5432) as proxy:
        app_settings = make_settings(database_url=url.set(host="127.0.0.1", port=proxy.port)
                                     .render_as_string(hide_password=False))
        with serve(app_settings) as client:
            assert client.get("/v1/agencies", headers=bearer(token)).status_code == 200
            proxy.cut()
            assert_outage(client, token)
            proxy.restore()
            assert client.get("/v1/agencies", headers=bearer(token)).status_code == 200
            assert client.get("/readyz").status_code == 200
            created = client.post("/v1/agencies", json={"code": "BACK", "name": "x"}, headers=bearer(token))
            assert created.status_code == 201, created.text
            assert chain_ok(client, token)
    db.rollback()
    assert db.get(Agency, "DOWN") is None


@pytest.mark.postgres_only
@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (SBT_TEST_DATABASE_URL)")
def test_connections_terminated_mid_run_give_503_or_success_never_500(
    backend: str, settings: Settings, issue_token: TokenFactory, db: Session,
) -> None:
    if backend != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    token = issue_token("BKN", "admin", "audit:read")
    database = make_url(settings.database_url).database
    killer = create_engine(make_url(settings.database_url).set(database="postgres"),
                           isolation_level="AUTOCOMMIT")
    statuses: list[int] = []
    acknowledged: list[str] = []
    stop = threading.Event()
    with serve(settings) as client:

        def work(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                code = f"PG{worker}_{n}"
                response = client.post("/v1/agencies", json={"code": code, "name": "x"},
                                       headers=bearer(token))
                statuses.append(response.status_code)
                if response.status_code == 201:
                    acknowledged.append(code)
                statuses.append(client.get("/v1/agencies", headers=bearer(token)).status_code)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in workers:
            thread.start()
        killed = 0
        for _ in range(5):
            seen = len(statuses)
            while len(statuses) < seen + 10 and all(t.is_alive() for t in workers):
                stop.wait(0.01)
            with killer.connect() as conn:
                killed += len(conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).all())
        stop.set()
        for thread in workers:
            thread.join(timeout=30)
        after = [client.get("/v1/agencies", headers=bearer(token)).status_code for _ in range(3)]
        assert chain_ok(client, token)
    killer.dispose()
    assert killed > 0
    assert set(statuses) <= {200, 201, 503}, sorted(set(statuses))
    assert after == [200, 200, 200]
    db.rollback()
    stored = set(db.scalars(select(Agency.code).where(Agency.code.like("PG%"))))
    assert set(acknowledged) <= stored
    events = {e.resource_ids[0] for e in db.scalars(select(AuditEvent).where(
        AuditEvent.action == "agency.create", AuditEvent.status_code == 201))}
    assert stored == {code for code in events if code.startswith("PG")}


def _failing_append(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("audit storage refused the insert")


def test_a_write_whose_audit_event_fails_is_503_with_no_data_and_nothing_kept(
    client: TestClient, issue_token: TokenFactory, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue_token("BKN", "admin")
    before = audit_count(db)
    monkeypatch.setattr(app.middleware, "append_events", _failing_append)
    response = client.post("/v1/agencies", json={"code": "LOST", "name": "Lembaga Hilang"},
                           headers=bearer(token))
    body = problem(response, 503, "service_unavailable")
    assert "LOST" not in response.text and "Lembaga" not in response.text
    assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}
    db.rollback()
    assert db.get(Agency, "LOST") is None
    assert audit_count(db) == before
    monkeypatch.undo()
    again = client.post("/v1/agencies", json={"code": "LOST", "name": "Lembaga Hilang"},
                        headers=bearer(token))
    assert again.status_code == 201, again.text
    assert audit_count(db) == before + 1


def test_a_read_whose_audit_event_fails_is_503_and_returns_no_data(
    client: TestClient, issue_token: TokenFactory, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue_token("BKN", "violations:read")
    before = audit_count(db)
    monkeypatch.setattr(app.audit.writer, "append_rows", _failing_append)
    for path in ("/v1/agencies", "/v1/nowhere"):
        response = client.get(path, headers=bearer(token))
        problem(response, 503, "service_unavailable")
        assert not any(name in response.text for name in AGENCY_NAMES)
    # A denial that cannot be recorded is not answered either.
    problem(client.get("/v1/agencies"), 503, "service_unavailable")
    assert audit_count(db) == before
    monkeypatch.undo()
    assert client.get("/v1/agencies", headers=bearer(token)).status_code == 200
    assert audit_count(db) == before + 1
