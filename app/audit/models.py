"""Audit tables: one row per event, one column per top-level field, plus a resource index and the head."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONText, UTCDateTime

GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str] = mapped_column(String(128))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_token_id: Mapped[str | None] = mapped_column(String(36))
    actor_agency: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    method: Mapped[str | None] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(Text)
    query: Mapped[str | None] = mapped_column(Text)
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_ids: Mapped[list[str]] = mapped_column(JSONText)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONText)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_events_agency_time", "actor_agency", "occurred_at", "seq"),
        Index("ix_audit_events_token", "actor_token_id", "seq"),
        Index("ix_audit_events_action", "action", "seq"),
        Index("ix_audit_events_occurred_at", "occurred_at", "seq"),
        CheckConstraint("outcome IN ('success', 'denied', 'rejected', 'error')", name="outcome"),
    )


class AuditEventResource(Base):
    """Index of `resource_ids`, so "who saw record X" is an index lookup instead of a table scan."""

    __tablename__ = "audit_event_resources"

    resource_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("audit_events.seq"), primary_key=True
    )


class ChainHead(Base):
    """The single row every appender locks: the chain's last seq and hash, and the change-feed position."""

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    feed_seq: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class AuditCheckpoint(Base):
    """A signed statement of the chain head, issued on request or automatically at an interval."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    jws: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_checkpoints_seq", "seq"),)
