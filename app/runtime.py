"""Everything one running service instance holds: settings, database, key, writers, limiters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.audit.writer import AuditWriter, WriteLock
from app.auth.jwt import TokenCodec
from app.auth.keys import load_signing_key
from app.config import Settings
from app.db import make_engine, make_read_engine, make_session_factory
from app.ratelimit import RateLimiter
from app.rawdb import Driver


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    codec: TokenCodec
    write_lock: WriteLock
    audit_writer: AuditWriter
    extras: dict[str, object] = field(default_factory=dict)
    # Driver-level reads (app/rawdb.py): PostgreSQL's autocommit pool, or SQLite's event-loop connection.
    read_engine: Engine | None = None
    _loop_reader: Any = None

    def __post_init__(self) -> None:
        self.driver = Driver.of(self.engine.dialect)

    def loop_reader(self) -> Any:
        """SQLite: the connection the event loop itself reads with.

        A point read of an embedded WAL database takes microseconds and never waits for a writer, less
        than handing it to a worker thread would cost; only the event loop thread ever uses it, so it is
        never shared. Writes and anything long still go to worker threads."""
        if self._loop_reader is None:
            self._loop_reader = self.engine.raw_connection()
        return self._loop_reader

    def drop_loop_reader(self) -> None:
        """Forget the event loop's connection after it failed; the next read opens a new one."""
        reader, self._loop_reader = self._loop_reader, None
        if reader is not None:
            reader.invalidate()

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        postgres = not settings.is_sqlite
        lock_timeout = settings.db_lock_timeout_seconds
        engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous,
                             pool_size=settings.db_pool_size if postgres else None, lock_timeout=lock_timeout)
        sessions = make_session_factory(engine)
        key = load_signing_key(settings.key_file)
        codec = TokenCodec(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
        write_lock = WriteLock(enabled=True, timeout=lock_timeout)
        batch_lock = write_lock if settings.is_sqlite else WriteLock(enabled=False)
        read_engine = make_read_engine(settings.database_url, pool_size=settings.db_read_pool_size,
                                       lock_timeout=lock_timeout)
        runtime = cls(settings, engine, sessions, codec, write_lock, AuditWriter(engine, batch_lock),
                      read_engine=read_engine)
        runtime.extras["rate_limiter"] = RateLimiter.from_settings(settings)
        return runtime

    async def close(self) -> None:
        await self.audit_writer.close()
        limiter = self.extras.get("rate_limiter")
        if isinstance(limiter, RateLimiter):
            await limiter.close()
        if self._loop_reader is not None:
            self._loop_reader.close()
            self._loop_reader = None
        self.engine.dispose()
        if self.read_engine is not None:
            self.read_engine.dispose()
