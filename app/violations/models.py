"""Violation tables: the current record, its append-only versions, the change feed, idempotency keys."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONText, UTCDateTime
from app.violations.workflow import Status

# SQL NULL (not JSON `null`) for "no recommendation yet", so the column reads as what it is.
NullableJSON = JSON(none_as_null=True)
# The province of a subject's region code (`NN` or `NN.NN`, validated on every write): what a province
# filter compares, through the indexes on this expression.
PROVINCE_SQL = "substr(subject_region_code, 1, 2)"
_STATUS_VALUES = ", ".join(f"'{s}'" for s in Status)


class Violation(Base):
    """The current state of one case; every version of it is also kept in `violation_versions`."""

    __tablename__ = "violations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    case_number: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    reporting_agency: Mapped[str] = mapped_column(String(32), ForeignKey("agencies.code"))
    subject_nip: Mapped[str] = mapped_column(String(18), index=True)
    subject_name: Mapped[str] = mapped_column(String(200))
    subject_employment_type: Mapped[str] = mapped_column(String(8))
    subject_position: Mapped[str] = mapped_column(String(200))
    subject_position_type: Mapped[str] = mapped_column(String(32))
    subject_institution: Mapped[str] = mapped_column(String(200))
    subject_region_code: Mapped[str] = mapped_column(String(16), index=True)
    election_type: Mapped[str] = mapped_column(String(16))
    election_year: Mapped[int] = mapped_column(Integer)
    election_stage: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    occurred_on: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(32))
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSONText)
    recommendation: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    follow_up: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    follow_up_due_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Keyset pagination: every sort is (timestamp, id), and each equality filter leads an index in
        # both sort orders, so a page at any depth walks 51 index entries instead of sorting or skipping
        # every match (docs/benchmarks.md, "Scale").
        Index("ix_violations_updated", "updated_at", "id"),
        Index("ix_violations_created", "created_at", "id"),
        Index("ix_violations_status_updated", "status", "updated_at", "id"),
        Index("ix_violations_status_created", "status", "created_at", "id"),
        Index("ix_violations_agency_updated", "reporting_agency", "updated_at", "id"),
        Index("ix_violations_agency_created", "reporting_agency", "created_at", "id"),
        Index("ix_violations_category_updated", "category", "updated_at", "id"),
        Index("ix_violations_category_created", "category", "created_at", "id"),
        Index("ix_violations_election_updated", "election_type", "election_year", "updated_at", "id"),
        Index("ix_violations_election_created", "election_type", "election_year", "created_at", "id"),
        Index("ix_violations_province_updated", text(PROVINCE_SQL), "updated_at", "id"),
        Index("ix_violations_province_created", text(PROVINCE_SQL), "created_at", "id"),
        Index("ix_violations_status_due", "status", "follow_up_due_on"),
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
    )


class ViolationVersion(Base):
    """Append-only: one row per version with the whole record as it then was and its history entry."""

    __tablename__ = "violation_versions"

    violation_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("violations.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    agency: Mapped[str] = mapped_column(String(32))
    token_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    action: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONText)
    document: Mapped[dict[str, Any]] = mapped_column(JSONText)
    # The subject's NIP at this version, so a data subject's trail also finds records whose NIP was
    # later corrected (GET /v1/audit/subjects/{nip}).
    subject_nip: Mapped[str] = mapped_column(String(18))

    __table_args__ = (Index("ix_violation_versions_subject_nip", "subject_nip", "violation_id"),)


class Change(Base):
    """The change feed. Rows are written only by `audit.feed_entries` callables, which receive `seq`
    under the chain-head lock at commit time, so seq order is commit order (docs/changes-feed.md)."""

    __tablename__ = "changes"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    violation_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("violations.id"))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    agency: Mapped[str] = mapped_column(String(32))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("violation_id", "version"),)


class IdempotencyKey(Base):
    """A create's Idempotency-Key and its response, replayed for 24 h. The row is inserted (claimed)
    before the record is created, so a concurrent duplicate waits on the key and then replays."""

    __tablename__ = "idempotency_keys"

    agency: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(NullableJSON)
    violation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


class CaseCounter(Base):
    """Last case number issued per year (Asia/Jakarta); rolled-back creates leave gaps, which is fine."""

    __tablename__ = "case_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(Integer)
