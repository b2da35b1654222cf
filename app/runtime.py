"""Everything one running service instance holds: settings, database, key, writers, limiters."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.audit.writer import AuditWriter, WriteLock
from app.auth.jwt import TokenCodec
from app.auth.keys import load_signing_key
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.ratelimit import RateLimiter


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    codec: TokenCodec
    write_lock: WriteLock
    audit_writer: AuditWriter
    extras: dict[str, object] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        sessions = make_session_factory(engine)
        key = load_signing_key(settings.key_file)
        codec = TokenCodec(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
        write_lock = WriteLock(enabled=settings.is_sqlite)
        runtime = cls(settings, engine, sessions, codec, write_lock, AuditWriter(sessions, write_lock))
        runtime.extras["rate_limiter"] = RateLimiter.from_settings(settings)
        return runtime

    async def close(self) -> None:
        await self.audit_writer.close()
        limiter = self.extras.get("rate_limiter")
        if isinstance(limiter, RateLimiter):
            await limiter.close()
        self.engine.dispose()
