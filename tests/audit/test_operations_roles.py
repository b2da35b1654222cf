"""The least-privilege PostgreSQL set-up in docs/operations.md, run as written on a fresh database: the app
role serves the API but cannot change the audit log; the owner hits the trigger but can disable it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app import migrate
from app.audit import checkpoints, service
from app.cli import issue_token_offline
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.main import create_app
from app.tokens.schemas import TokenCreate
from tests.conftest import PG_URL, bearer
from tests.violations.conftest import VALID_BODY

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (set SBT_TEST_DATABASE_URL)"),
]

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def role_blocks() -> list[str]:
    """The three SQL blocks of the "Least-privilege PostgreSQL roles" section, in order."""
    text_ = DOC.read_text(encoding="utf-8")
    section = text_.split("## Least-privilege PostgreSQL roles", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 3
    return blocks


def statements(block: str) -> list[str]:
    lines = [line for line in block.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@dataclass
class Cluster:
    owner_url: str
    app_url: str
    database: str


def url_as(role: str, database: str) -> str:
    assert PG_URL is not None
    return make_url(PG_URL).set(username=role, password=None, database=database).render_as_string(
        hide_password=False)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    suffix = uuid.uuid4().hex[:8]
    owner, app, database = f"sbt_owner_{suffix}", f"sbt_app_{suffix}", f"sbt_roles_{suffix}"

    def named(block: str) -> str:
        block = re.sub(r"\bsbt_owner\b", owner, block)
        block = re.sub(r"\bsbt_app\b", app, block)
        return re.sub(r"\bDATABASE sbt\b", f'DATABASE "{database}"', block)

    once, in_database, after_upgrade = (named(b) for b in role_blocks())
    assert PG_URL is not None
    admin = create_engine(make_url(PG_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for sql in statements(once):
                conn.exec_driver_sql(sql)
        superuser = create_engine(make_url(PG_URL).set(database=database), isolation_level="AUTOCOMMIT")
        with superuser.connect() as conn:
            for sql in statements(in_database):
                conn.exec_driver_sql(sql)
        superuser.dispose()
        owner_url = url_as(owner, database)
        migrate.upgrade(owner_url)
        owner_engine = create_engine(owner_url)
        with owner_engine.begin() as conn:
            for sql in statements(after_upgrade):
                conn.exec_driver_sql(sql)
        owner_engine.dispose()
        yield Cluster(owner_url, url_as(app, database), database)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{app}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{owner}"')
        admin.dispose()


def refused(url: str, sql: str) -> DBAPIError:
    engine = create_engine(url)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as error:
            conn.execute(text(sql))
        return error.value
    finally:
        engine.dispose()


def test_the_app_role_serves_everything_but_cannot_change_the_audit_log(
    cluster: Cluster, key_file: Path, tmp_path: Path
) -> None:
    settings = Settings(database_url=cluster.app_url, signing_key_file=key_file, data_dir=tmp_path,
                        env="test", checkpoint_interval_seconds=0)
    engine = make_engine(cluster.app_url, pool_size=1)
    with make_session_factory(engine)() as session:
        _, admin = issue_token_offline(settings, session, TokenCreate(
            agency="BKN", name="roles test", scopes=["admin", "audit:read", "violations:read",
                                                      "violations:write"], expires_in_days=1))
    engine.dispose()

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/agencies", headers=bearer(admin)).status_code == 200
        body = {"agency": "KASN", "name": "t", "scopes": ["violations:read"]}
        created = client.post("/v1/tokens", json=body, headers=bearer(admin))
        assert created.status_code == 201, created.text
        assert client.delete(f"/v1/tokens/{created.json()['id']}", headers=bearer(admin)).status_code == 204
        record = client.post("/v1/violations", json=VALID_BODY,
                             headers={**bearer(admin), "Idempotency-Key": "roles-1"})
        assert record.status_code == 201, record.text
        again = client.post("/v1/violations", json=VALID_BODY,
                            headers={**bearer(admin), "Idempotency-Key": "roles-1"})
        assert again.status_code == 201 and again.json()["id"] == record.json()["id"]
        assert client.get("/v1/audit/checkpoint", headers=bearer(admin)).status_code == 200
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert checkpoints.record_if_head_moved(runtime.sessions, runtime.codec) is not None
        verified = client.get("/v1/audit/verify", headers=bearer(admin)).json()
        # token.create, agency.list, token.create, token.revoke, violation.create twice, audit.checkpoint
        assert (verified["ok"], verified["checked"]) == (True, 7)

    for sql in ("UPDATE audit_events SET path = 'x'", "DELETE FROM audit_events",
                "TRUNCATE audit_events CASCADE", "UPDATE audit_event_resources SET seq = 1",
                "DELETE FROM audit_checkpoints", "UPDATE audit_checkpoints SET jws = 'x'",
                "TRUNCATE changes CASCADE", "UPDATE alembic_version SET version_num = 'x'"):
        error = refused(cluster.app_url, sql)
        assert getattr(error.orig, "sqlstate", None) == "42501", sql
        assert "permission denied for table" in str(error.orig), sql


def test_the_owner_meets_the_trigger_but_can_disable_it_which_verification_then_catches(
    cluster: Cluster, key_file: Path, tmp_path: Path
) -> None:
    settings = Settings(database_url=cluster.owner_url, signing_key_file=key_file, data_dir=tmp_path,
                        env="test", checkpoint_interval_seconds=0)
    engine = make_engine(cluster.owner_url, pool_size=1)
    sessions = make_session_factory(engine)
    with sessions() as session:
        issue_token_offline(settings, session, TokenCreate(agency="BKN", name="a", scopes=["admin"],
                                                           expires_in_days=1))
    error = refused(cluster.owner_url, "UPDATE audit_events SET path = 'x'")
    assert "the audit log is append-only: UPDATE on audit_events refused" in str(error.orig)

    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        conn.exec_driver_sql("UPDATE audit_events SET user_agent = 'forged' WHERE seq = 1")
        conn.exec_driver_sql("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    with sessions() as session:
        result = service.verify(session)
    engine.dispose()
    assert (result.ok, result.first_invalid_seq) == (False, 1)
