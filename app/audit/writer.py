"""Group commit of audit events that ride in no write transaction of their own (reads, denials, errors).

Concurrent requests hand their event to one writer task; it chains and commits everything that queued
up while the previous batch was being made durable, then releases each waiting request. Every event is
still committed before its response is sent, but one fsync serves many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.audit.chain import EventDraft, append_rows
from app.clock import utcnow
from app.errors import LockTimeout
from app.rawdb import Driver

if TYPE_CHECKING:
    from app.auth.principal import Principal

log = logging.getLogger("sbt.audit")

MAX_BATCH = 512
LAST_USED_RESOLUTION_S = 60


@dataclass
class _Pending:
    draft: EventDraft
    touch_token: uuid.UUID | None
    future: asyncio.Future[dict[str, Any]]


def last_use_is_stale(principal: Principal) -> bool:
    last = principal.last_used_at
    return last is None or last < utcnow() - timedelta(seconds=LAST_USED_RESOLUTION_S)


_TOUCH_SQL = (
    "UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"
)


def touch_tokens(session: Session, token_ids: set[uuid.UUID]) -> None:
    """Keep `last_used_at` to the minute without a write per request."""
    connection = session.connection()
    touch_token_rows(connection.connection, Driver.of(connection.dialect), token_ids)


def touch_token_rows(dbapi_connection: Any, driver: Driver, token_ids: set[uuid.UUID]) -> None:
    """`touch_tokens` on a DBAPI connection, in the transaction open on it."""
    if not token_ids:
        return
    now = utcnow()
    cutoff = now - timedelta(seconds=LAST_USED_RESOLUTION_S)
    cursor = dbapi_connection.cursor()
    try:
        cursor.executemany(driver.sql(_TOUCH_SQL), [
            (driver.instant_param(now), driver.key(token_id), driver.instant_param(cutoff))
            for token_id in sorted(token_ids)
        ])
    finally:
        cursor.close()


class AuditWriter:
    def __init__(self, engine: Engine, write_lock: WriteLock) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self._pending: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.head_seq: int | None = None

    def record_written(self, documents: list[dict[str, Any]]) -> None:
        """Count events committed by this process (either path), for /metrics."""
        if documents:
            self.written += len(documents)
            self.head_seq = documents[-1]["seq"]

    async def append(self, draft: EventDraft, *, touch_token: uuid.UUID | None = None) -> dict[str, Any]:
        """Return the committed event; raises if it could not be made durable."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run(), name="sbt-audit-writer")
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending.append(_Pending(draft, touch_token, future))
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    async with self._write_lock:
                        documents = await anyio.to_thread.run_sync(self._write_batch, batch)
                except Exception as exc:  # every waiting request gets the failure and answers 503
                    log.error("audit batch of %d events failed: %s", len(batch), type(exc).__name__)
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                self.record_written(documents)
                for item, document in zip(batch, documents, strict=True):
                    if not item.future.done():
                        item.future.set_result(document)

    def _write_batch(self, batch: list[_Pending]) -> list[dict[str, Any]]:
        """One transaction for the whole batch, on a DBAPI connection (app/rawdb.py): the batch is the
        commit every read waits for, so SQLAlchemy's session and statement layers are left out."""
        driver = Driver.of(self._engine.dialect)
        connection = self._engine.raw_connection()
        try:
            if driver.is_sqlite:  # the connection is in autocommit mode; a write transaction from the start
                connection.cursor().execute("BEGIN IMMEDIATE")
            documents, _ = append_rows(connection, driver, [item.draft for item in batch])
            touch_token_rows(connection, driver,
                             {item.touch_token for item in batch if item.touch_token is not None})
            connection.commit()
        except BaseException:
            try:
                connection.rollback()
            except Exception:  # the connection itself is gone: never hand it out again
                connection.invalidate()
            raise
        finally:
            connection.close()
        return documents


class WriteLock:
    """Serialises the write transactions of one process, so that waiting for a writer happens here, on the
    event loop, and never in a worker thread.

    SQLite has a single writer anyway; without this, threads sat in busy_timeout. On PostgreSQL every
    create holds its year's `case_counters` row and every write commits under the chain head's row lock, so
    writes were serial there too, but each one waiting for a row lock held a worker thread: with more
    writes in flight than worker threads (40), all of them could be waiting for the row of a transaction
    that needed a thread to commit, and the service stopped for good (seen under 32 concurrent creates
    whose client timed out and retried). On PostgreSQL the audit writer's read batches do not take it (they
    wait for the chain head on their own thread); on SQLite they do. A disabled lock is a no-op."""

    def __init__(self, enabled: bool, timeout: float | None = None) -> None:
        self._lock = asyncio.Lock() if enabled else None
        # A write queued longer than this gets LockTimeout (503): the writes ahead of it are stuck behind
        # a lock held elsewhere, and each of them waits for that lock at most the same time.
        self._timeout = timeout

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    async def acquire(self) -> None:
        if self._lock is None:
            return
        if self._timeout is None:
            await self._lock.acquire()
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise LockTimeout(self._timeout) from None

    def release(self) -> None:
        if self._lock is not None and self._lock.locked():
            self._lock.release()
