"""A write stuck behind a lock held elsewhere gives up after SBT_DB_LOCK_TIMEOUT_SECONDS.

Another instance's write, an operator's forgotten open transaction or a migration can hold a lock a create
needs. Without a limit the create waited for as long as that lasted, and every later write of the process
queued behind it (writes are serialised per process, app.audit.writer.WriteLock). Now the wait ends with a
503 problem, nothing is changed, and the service carries on once the lock is released.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from app.audit.chain import verify_documents
from app.audit.service import iter_documents
from app.audit.writer import WriteLock
from app.config import Settings
from app.db import is_lock_timeout
from app.errors import LockTimeout
from app.main import create_app
from app.violations.models import Violation
from tests.conftest import audit_rows, bearer, lock_held_elsewhere
from tests.violations.conftest import VALID_BODY

TIMEOUT = 0.5


def violation_count(db: Session) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(Violation)) or 0


def test_a_create_behind_a_held_lock_gets_503_and_changes_nothing(
    make_settings: Callable[..., Settings], agency_tokens: dict[str, str], db: Session, backend: str,
) -> None:
    settings = make_settings(db_lock_timeout_seconds=TIMEOUT)
    headers = bearer(agency_tokens["BAWASLU"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        before = violation_count(db)
        with lock_held_elsewhere(settings.database_url, "case_counters"):
            refused = client.post("/v1/violations", json=VALID_BODY, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["code"] == "service_unavailable"
        if backend == "postgresql":
            # The refusal itself is audited (its event needs no case counter).
            assert "held by another transaction for more than 0.5 s" in problem["detail"]
            last = audit_rows(db)[-1]
            assert (last.action, last.status_code, last.request_id) == (
                "violation.create", 503, refused.headers["x-request-id"])
        else:
            # One writer for the whole file: the refusal's own event cannot be written either, so the
            # answer is the audit log's 503 (nothing returned or kept).
            assert "could not be recorded in the audit log" in problem["detail"]
        assert violation_count(db) == before

        created = client.post("/v1/violations", json=VALID_BODY, headers=headers)
        assert created.status_code == 201, created.text
        assert violation_count(db) == before + 1
    db.rollback()
    assert verify_documents(iter_documents(db)).ok


def test_the_timeout_reaches_both_databases(make_settings: Callable[..., Settings], backend: str) -> None:
    """The setting is what the connections use (not only the default)."""
    settings = make_settings(db_lock_timeout_seconds=2.5)
    app = create_app(settings)
    with TestClient(app):
        runtime = app.state.runtime
        with runtime.engine.connect() as connection:
            if backend == "sqlite":
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
            else:
                assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "2500ms"
        if runtime.read_engine is not None:
            with runtime.read_engine.connect() as connection:
                assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "2500ms"


def test_a_driver_lock_timeout_is_told_from_an_outage(db_url: str) -> None:
    engine = create_engine(db_url, connect_args={"timeout": 0.05} if db_url.startswith("sqlite") else {})
    try:
        with lock_held_elsewhere(db_url, "case_counters"), engine.connect() as connection:
            if db_url.startswith("sqlite"):
                statement = "BEGIN IMMEDIATE"
            else:
                connection.exec_driver_sql("SET lock_timeout = 50")
                statement = "LOCK TABLE case_counters IN EXCLUSIVE MODE"
            with pytest.raises(Exception) as caught:
                connection.exec_driver_sql(statement)
        assert is_lock_timeout(caught.value)
        assert is_lock_timeout(caught.value.orig)  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    assert not is_lock_timeout(ValueError("database is locked"))
    assert not is_lock_timeout(ConnectionError())


def test_a_write_queued_behind_a_stuck_write_gives_up() -> None:
    async def scenario() -> None:
        lock = WriteLock(enabled=True, timeout=0.05)
        await lock.acquire()  # the stuck write
        with pytest.raises(LockTimeout) as caught:
            await lock.acquire()
        assert caught.value.status == 503
        assert "0.05 s" in caught.value.detail
        lock.release()
        await asyncio.wait_for(lock.acquire(), 1)  # a timed-out waiter left nothing behind
        lock.release()

    asyncio.run(scenario())
