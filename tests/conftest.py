"""Test harness: every database test runs on SQLite and, with SBT_TEST_DATABASE_URL, on PostgreSQL.

Each test starts from the database a migration leaves, so tests may count audit events: on SQLite a copy
of a template file migrated once per session by Alembic; on PostgreSQL each worker's own database, emptied
back to the template's rows before every test (a copy by CREATE DATABASE ... TEMPLATE cost 65-140 ms a
test, the reset 6 ms). Tests that need a database nobody used before (query plans depend on the tables'
statistics, which a reset keeps) are marked `fresh_database` and get a copy.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import migrate
from app.audit.models import AuditEvent
from app.auth.keys import generate_key_file
from app.auth.principal import Scope
from app.cli import issue_token_offline
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.main import create_app
from app.tokens.schemas import TokenCreate

PG_URL = os.environ.get("SBT_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
ALL_SCOPES = [str(s) for s in Scope]


def _admin_url(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


class PostgresTemplates:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.prefix = f"sbt_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.admin = create_engine(_admin_url(base_url), isolation_level="AUTOCOMMIT")
        self.template = f"{self.prefix}_tpl"
        self.created: list[str] = []
        self._execute(f'CREATE DATABASE "{self.template}"')
        self.created.append(self.template)
        migrate.upgrade(self.url_for(self.template))
        with psycopg.connect(self._libpq_url(self.template)) as conn:
            self.tables = [row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'")]
            self.sequences = [row[0] for row in conn.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")]
            self.seed: dict[str, bytes] = {}  # the rows the migrations put in, by table
            for table in self.tables:
                with conn.cursor().copy(f'COPY "{table}" TO STDOUT') as copy:
                    data = b"".join(bytes(block) for block in copy)
                if data:
                    self.seed[table] = data
        self._reused: str | None = None

    def _libpq_url(self, name: str) -> str:
        return make_url(self.url_for(name)).set(drivername="postgresql").render_as_string(hide_password=False)

    def reused(self) -> str:
        """This worker's database, as the migrations left it: every connection to it ended (a test's pool
        or server left behind), every row deleted with triggers off, the sequences restarted and the
        template's rows copied back."""
        if self._reused is None:
            self._reused = self.fresh()
        name = make_url(self._reused).database
        assert name is not None
        with self.admin.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        with psycopg.connect(self._libpq_url(name)) as conn:
            conn.execute("SET LOCAL session_replication_role = replica")  # past the append-only triggers
            for table in self.tables:
                conn.execute(f'DELETE FROM "{table}"')  # noqa: S608
            for sequence in self.sequences:
                conn.execute(f'ALTER SEQUENCE "{sequence}" RESTART')
            for table, data in self.seed.items():
                with conn.cursor().copy(f'COPY "{table}" FROM STDIN') as copy:
                    copy.write(data)
        return self._reused

    def url_for(self, name: str) -> str:
        return make_url(self.base_url).set(database=name).render_as_string(hide_password=False)

    def _execute(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(sql))

    def fresh(self) -> str:
        name = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return self.url_for(name)

    def empty(self) -> str:
        name = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        self._execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in reversed(self.created):
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "signing-key.pem"
    generate_key_file(path, "ES256")
    return path


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_templates() -> Iterator[PostgresTemplates | None]:
    if not PG_URL:
        yield None
        return
    templates = PostgresTemplates(PG_URL)
    yield templates
    templates.close()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path,
           pg_templates: PostgresTemplates | None) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "sbt.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    assert pg_templates is not None
    if request.node.get_closest_marker("fresh_database") is None:
        yield pg_templates.reused()
        return
    url = pg_templates.fresh()
    yield url
    pg_templates.drop(url)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path,
                 pg_templates: PostgresTemplates | None) -> Iterator[str]:
    """A database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert pg_templates is not None
    url = pg_templates.empty()
    yield url
    pg_templates.drop(url)


@pytest.fixture
def backend(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def settings(db_url: str, key_file: Path, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, signing_key_file=key_file, data_dir=tmp_path, env="test",
                    checkpoint_interval_seconds=0)


@pytest.fixture
def make_settings(settings: Settings) -> Callable[..., Settings]:
    """Settings for this test's database with some values changed."""

    def make(**changes: object) -> Settings:
        return settings.model_copy(update=changes)

    return make


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    """A plain session on the test's database, for looking behind the API."""
    engine = make_engine(settings.database_url, pool_size=2)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


TokenFactory = Callable[..., str]


@pytest.fixture
def issue_token(settings: Settings) -> Iterator[TokenFactory]:
    """issue_token("BKN", "violations:read", ...) -> a bearer token value (issued as the CLI would)."""
    engine = make_engine(settings.database_url, pool_size=1)
    sessions = make_session_factory(engine)

    def issue(agency: str = "BKN", *scopes: str, days: int = 30) -> str:
        data = TokenCreate(agency=agency, name=f"test {agency}", scopes=list(scopes or ALL_SCOPES),
                           expires_in_days=days)
        with sessions() as session:
            _, value = issue_token_offline(settings, session, data)
        return value

    yield issue
    engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_rows(db: Session) -> list[AuditEvent]:
    """Every audit row in seq order, read in a new transaction (so commits by the app are visible)."""
    db.rollback()
    return list(db.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


@contextmanager
def lock_held_elsewhere(url: str, table: str) -> Iterator[None]:
    """An outside session holding a lock until the block ends: writes to `table` wait for it on PostgreSQL
    (reads do not), any write at all on SQLite (one writer for the whole file)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if url.startswith("sqlite"):
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                # Should the service wait without limit, the server ends this session after 20 s and the
                # write goes through: the test then fails on its status instead of hanging.
                connection.execute(text("SET idle_in_transaction_session_timeout = '20s'"))
                connection.execute(text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
            try:
                yield
            finally:
                with suppress(DBAPIError):  # the server may have ended the session (see above)
                    connection.rollback()
    finally:
        engine.dispose()
