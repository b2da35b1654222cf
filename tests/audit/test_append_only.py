"""The audit tables are append-only in the database itself: on PostgreSQL a trigger refuses UPDATE, DELETE
and TRUNCATE, whoever sends them (unless a superuser switches triggers off, which checkpoints catch)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from tests.audit.conftest import build_log
from tests.conftest import TokenFactory

STATEMENTS = [
    ("UPDATE", "audit_events", "UPDATE audit_events SET path = '/v1/forged'"),
    ("DELETE", "audit_events", "DELETE FROM audit_events WHERE seq = 3"),
    ("TRUNCATE", "audit_events", "TRUNCATE audit_events CASCADE"),
    ("UPDATE", "audit_event_resources", "UPDATE audit_event_resources SET resource_id = 'x'"),
    ("DELETE", "audit_event_resources", "DELETE FROM audit_event_resources"),
    ("TRUNCATE", "audit_event_resources", "TRUNCATE audit_event_resources"),
]


@pytest.mark.parametrize(("operation", "table", "sql"), STATEMENTS,
                         ids=[f"{op}-{table}" for op, table, _ in STATEMENTS])
def test_changing_or_removing_audit_rows_is_refused_by_the_database(
    client: TestClient, issue_token: TokenFactory, settings: Settings, backend: str,
    operation: str, table: str, sql: str,
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no append-only trigger (the migration installs it on PostgreSQL only); "
                    "there tampering is caught by verification alone, see docs/operations.md")
    build_log(client, issue_token)  # rows in both tables, so row-level triggers have something to refuse
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            before = conn.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 (fixed names)
            assert before
            with pytest.raises(DBAPIError) as refused:
                conn.execute(text(sql))
            conn.rollback()
            error = refused.value.orig
            assert error is not None
            assert getattr(error, "sqlstate", None) == "42501"  # insufficient_privilege
            assert f"the audit log is append-only: {operation} on {table} refused" in str(error)
            assert conn.scalar(text(f"SELECT count(*) FROM {table}")) == before  # noqa: S608
    finally:
        engine.dispose()
