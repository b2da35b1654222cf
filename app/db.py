"""Database plumbing: declarative base, engine set-up for SQLite and PostgreSQL, column types."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Execution option that asks SQLite for a write transaction from the first statement (BEGIN IMMEDIATE),
# so a transaction never has to upgrade a read lock, which WAL refuses once another writer committed.
WRITE_INTENT = "sbt_write_intent"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive text, PostgreSQL timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Plain JSON keeps text as written (audit detail must hash the same after a round trip); JSONB where we
# query inside documents.
JSONText = JSON().with_variant(JSON(), "postgresql")
JSONDoc = JSON().with_variant(JSONB(), "postgresql")


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def _sqlite_path(url: str) -> Path | None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        return None
    return Path(path.split("?", 1)[0])


# The service's default pools. A request holds its connection from the token check until its response
# starts, so as many connections are in use as requests are in flight. Past pool_size, an extra connection
# is opened, and closed again when returned, at every peak; on SQLite each reopening also re-runs the
# PRAGMAs below (at 32 concurrent reads, one checkout in four reconnected with 20). A SQLite connection is
# only a file handle and its page cache, so keep enough of them.
SQLITE_POOL_SIZE = 64
POOL_SIZE = 20
# As many as worker threads (anyio's default limit): past it, every peak opened and closed connections
# (on PostgreSQL a server process each; 217 in 6 s at 32 concurrent reads with 20).
READ_POOL_SIZE = 40
# How long a statement waits for a lock another transaction holds before it fails (SQLite's busy timeout,
# PostgreSQL's lock_timeout); the request then gets 503 and changes nothing (SBT_DB_LOCK_TIMEOUT_SECONDS).
LOCK_TIMEOUT_SECONDS = 30.0


def _postgres_connect_args(lock_timeout: float) -> dict[str, Any]:
    return {"connect_timeout": 5, "prepare_threshold": 2,
            "options": f"-c lock_timeout={max(1, round(lock_timeout * 1000))}"}


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int | None = None,
                lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> Engine:
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": lock_timeout},
            pool_size=SQLITE_POOL_SIZE if pool_size is None else pool_size,
            max_overflow=10,
        )
        _configure_sqlite(engine, sqlite_synchronous, lock_timeout)
        return engine
    return create_engine(
        url,
        pool_size=POOL_SIZE if pool_size is None else pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=_postgres_connect_args(lock_timeout),
    )


def make_read_engine(url: str, *, pool_size: int | None = None,
                     lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> Engine | None:
    """PostgreSQL: a second pool in autocommit mode for the driver-level reads of app/rawdb.py (each a
    single statement, so no BEGIN/ROLLBACK round trips and no ping per checkout: a connection that died
    fails its statement, is invalidated and answered with 503, and the next checkout opens a new one).
    SQLite needs none: those reads run on the event loop's own connection (Runtime.loop_reader)."""
    if url.startswith("sqlite"):
        return None
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=READ_POOL_SIZE if pool_size is None else pool_size,
        max_overflow=10,
        pool_recycle=1800,
        connect_args=_postgres_connect_args(lock_timeout),
    )


def _configure_sqlite(engine: Engine, synchronous: str, lock_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit BEGIN is too late and
        # always DEFERRED).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={max(1, round(lock_timeout * 1000))}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_INTENT, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether a database error (the driver's, or SQLAlchemy's wrapping it) is a lock wait that timed out:
    PostgreSQL's lock_not_available (SQLSTATE 55P03), SQLite's SQLITE_BUSY after the busy timeout."""
    error = getattr(exc, "orig", None) or exc
    if getattr(error, "sqlstate", None) == "55P03":
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_BUSY


_SQLITE_BUSY = 5


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


def begin_write(session: Session) -> None:
    """Start the session's transaction as a write (BEGIN IMMEDIATE on SQLite); no-op if one is open."""
    if not session.in_transaction():
        session.connection(execution_options={WRITE_INTENT: True})
