"""Signed checkpoints of the audit chain head: issuing, storing, listing, reading back, and the periodic task.

A checkpoint is a compact JWS (service key, `typ` "sbt-checkpoint+jws") over `{"seq", "hash", "issued_at"}`
of the chain head. Kept outside the service, it lets an auditor prove later that no event up to `seq` was
changed, removed or cut off the end, with nothing but the published JWKS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.audit.chain import lock_head
from app.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent, ChainHead
from app.auth.jwt import TokenCodec, TokenRejected
from app.clock import format_instant, utcnow
from app.db import begin_write
from app.errors import AppError
from app.pagination import decode_int_cursor, split_page

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("sbt.audit")

CHECKPOINT_TYPE = "sbt-checkpoint+jws"
MAX_CHECKPOINT_CHARS = 8192
_HASH = re.compile(r"^[0-9a-f]{64}$")


class CheckpointOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jws: str


class CheckpointItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    seq: int
    hash: str
    issued_at: str
    jws: str


class CheckpointPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[CheckpointItem]
    next_cursor: str | None


@dataclass(frozen=True)
class Checkpoint:
    """What a verified checkpoint states: event `seq` of the chain had hash `hash` at `issued_at`."""

    seq: int
    hash: str
    issued_at: str


class CheckpointInvalid(Exception):
    """Not a checkpoint this service signed; the message is safe to show."""


class ChainHeadMismatch(AppError):
    """The head row names an event the log does not hold as stated: nothing honest can be signed."""

    status, code, title = 500, "audit_chain_inconsistent", "Audit chain inconsistent"


def read_checkpoint(codec: TokenCodec, compact: str) -> Checkpoint:
    """Check a checkpoint's signature with the service key and the shape of its statement."""
    compact = compact.strip()
    if len(compact) > MAX_CHECKPOINT_CHARS:
        raise CheckpointInvalid("too large to be a checkpoint")
    try:
        statement = codec.verify_statement(compact, typ=CHECKPOINT_TYPE)
    except TokenRejected as exc:
        raise CheckpointInvalid(str(exc)) from None
    seq, hash_, issued_at = statement.get("seq"), statement.get("hash"), statement.get("issued_at")
    # bool is an int to Python; a JSON `true` is not a seq.
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise CheckpointInvalid("its seq is not a non-negative integer")
    if not isinstance(hash_, str) or not _HASH.match(hash_):
        raise CheckpointInvalid("its hash is not 64 lowercase hex digits")
    if not isinstance(issued_at, str):
        raise CheckpointInvalid("its issued_at is not a timestamp")
    if seq == 0 and hash_ != GENESIS_HASH:
        raise CheckpointInvalid("a checkpoint of the empty log must carry the genesis hash")
    return Checkpoint(seq, hash_, issued_at)


def issue_checkpoint(session: Session, codec: TokenCodec, *, seq: int, hash_: str) -> AuditCheckpoint:
    """Sign (seq, hash) of the head and add the checkpoint row (flushed, not committed)."""
    if seq > 0:
        stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == seq))
        if stored != hash_:
            # Signing this would vouch for a log the service does not hold; `sbt audit verify` says more.
            log.error("chain head (seq %d) does not match the stored event; no checkpoint issued", seq)
            raise ChainHeadMismatch("the chain head does not match the audit log; run `sbt audit verify`")
    issued_at = utcnow()
    statement = {"seq": seq, "hash": hash_, "issued_at": format_instant(issued_at)}
    row = AuditCheckpoint(seq=seq, hash=hash_, issued_at=issued_at,
                          jws=codec.sign_statement(statement, typ=CHECKPOINT_TYPE))
    session.add(row)
    session.flush()
    return row


def record_checkpoint(sessions: sessionmaker[Session], codec: TokenCodec) -> AuditCheckpoint:
    """Issue a checkpoint of the current head and commit it in a transaction of its own.

    A checkpoint is asked for with a GET, whose request transaction is rolled back; the checkpoint row
    must outlive it. The caller holds the write lock on SQLite.
    """
    with sessions() as session:
        begin_write(session)
        head = session.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1)).one()
        row = issue_checkpoint(session, codec, seq=head.seq, hash_=head.hash)
        session.commit()
    return row


def record_if_head_moved(sessions: sessionmaker[Session], codec: TokenCodec) -> AuditCheckpoint | None:
    """One iteration of the periodic task: a checkpoint only when the head moved since the last one.

    The head row stays locked while deciding, so several instances never record the same head twice.
    """
    with sessions() as session:
        begin_write(session)
        head = lock_head(session)
        last = session.execute(
            select(AuditCheckpoint.seq, AuditCheckpoint.hash).order_by(AuditCheckpoint.id.desc()).limit(1)
        ).one_or_none()
        if head.seq == 0 or (last is not None and (last.seq, last.hash) == (head.seq, head.hash)):
            session.rollback()
            return None
        if last is not None and head.seq < last.seq:
            # The log is shorter than a checkpoint already issued: it was cut. Re-signing the shorter
            # head would paper over that, so refuse loudly until an operator looks.
            session.rollback()
            log.error("audit chain head seq %d is behind checkpoint seq %d: events were removed; "
                      "run `sbt audit verify --checkpoint`", head.seq, last.seq)
            return None
        row = issue_checkpoint(session, codec, seq=head.seq, hash_=head.hash)
        session.commit()
    return row


def list_checkpoints(
    *, session: Session, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Stored checkpoints, newest first, keyset on id."""
    stmt = select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(limit + 1)
    last_id = decode_int_cursor(cursor)
    if last_id is not None:
        stmt = stmt.where(AuditCheckpoint.id < last_id)
    rows, next_cursor = split_page(list(session.scalars(stmt)), limit, lambda r: (r.id,))
    items = [{"id": r.id, "seq": r.seq, "hash": r.hash, "issued_at": format_instant(r.issued_at),
              "jws": r.jws} for r in rows]
    return items, next_cursor


async def run_periodic_checkpoints(runtime: Runtime) -> None:
    """Every `checkpoint_interval_seconds`, record a checkpoint if the head moved; survives outages."""
    interval = runtime.settings.checkpoint_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            async with runtime.write_lock:
                await anyio.to_thread.run_sync(record_if_head_moved, runtime.sessions, runtime.codec)
        except Exception as exc:  # a database outage must not end the task; the next round retries
            log.warning("periodic audit checkpoint failed: %s", type(exc).__name__)


def start_periodic_checkpoints(runtime: Runtime) -> asyncio.Task[None] | None:
    """Start the task (from the app's lifespan); None when the interval is 0 (off)."""
    if runtime.settings.checkpoint_interval_seconds <= 0:
        return None
    task = asyncio.get_running_loop().create_task(run_periodic_checkpoints(runtime), name="sbt-checkpoints")
    runtime.extras["checkpoint_task"] = task
    return task


async def stop_periodic_checkpoints(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
