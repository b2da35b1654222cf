"""Reading violation records: one record, filtered pages, history, past versions and the change feed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, Uuid, and_, literal, literal_column, or_, select, tuple_
from sqlalchemy.orm import Session

from app.clock import format_instant
from app.db import UTCDateTime
from app.errors import NotFound, ValidationFailed
from app.pagination import decode_cursor, malformed_cursor, split_page
from app.rawdb import Driver
from app.violations.documents import record_document
from app.violations.identifiers import normalize_nip, validate_region_code
from app.violations.models import PROVINCE_SQL, Change, Violation, ViolationVersion
from app.violations.service import parse_id
from app.violations.workflow import Status

_LIKE_ESCAPE = "\\"


class Sort(StrEnum):
    UPDATED_DESC = "-updated_at"
    UPDATED_ASC = "updated_at"
    CREATED_DESC = "-created_at"
    CREATED_ASC = "created_at"

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")

    @property
    def field_name(self) -> str:
        return self.value.lstrip("-")

    @property
    def column(self) -> Any:
        return getattr(Violation, self.field_name)


@dataclass(frozen=True)
class ViolationFilters:
    statuses: tuple[str, ...] = ()
    category: str | None = None
    reporting_agency: str | None = None
    region_code: str | None = None  # matches itself and every code under it: 32 → 32, 32.16
    election_type: str | None = None
    election_year: int | None = None
    nip: str | None = None
    q: str | None = None
    updated_since: datetime | None = None
    overdue: bool | None = None


# The record as its latest version stored it: every write stores `record_document` of the row it leaves
# in violation_versions, so this is byte-for-byte what /versions/{latest} serves.
_CURRENT_SQL = (
    "SELECT v.version, d.document FROM violations v"
    " JOIN violation_versions d ON d.violation_id = v.id AND d.version = v.version WHERE v.id = ?"
)


def current_document(connection: Any, driver: Driver, violation_id: uuid.UUID) -> tuple[int, Any] | None:
    """(version, document) of one record on a DBAPI connection, or None. It serves the hottest route
    (GET /v1/violations/{id}), so it is driver-level SQL (app/rawdb.py); the document comes back as the
    driver loads the JSON column (text on SQLite)."""
    row = driver.one(connection, driver.sql(_CURRENT_SQL), (driver.key(violation_id),))
    return None if row is None else (row[0], row[1])


def _like(text: str) -> str:
    escaped = text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", r"\%").replace("_", r"\_")
    return f"%{escaped}%"


def _overdue(today: date) -> ColumnElement[bool]:
    return and_(Violation.status == Status.RECOMMENDED.value, Violation.follow_up_due_on < today)


def _query_error(name: str, message: str) -> ValidationFailed:
    return ValidationFailed("the request is not valid; see `errors`",
                            errors=[{"loc": ["query", name], "msg": message}])


def _filtered(stmt: Select[Any], filters: ViolationFilters, today: date) -> Select[Any]:
    for name in ("reporting_agency", "q", "nip", "region_code"):
        if "\x00" in (getattr(filters, name) or ""):
            raise _query_error(name, "must not contain the NUL character")
    if filters.statuses:
        stmt = stmt.where(Violation.status.in_(filters.statuses))
    for column, value in ((Violation.category, filters.category),
                          (Violation.reporting_agency, filters.reporting_agency),
                          (Violation.election_type, filters.election_type),
                          (Violation.election_year, filters.election_year)):
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.region_code is not None:
        try:
            code = validate_region_code(filters.region_code)
        except ValueError as exc:
            raise _query_error("region_code", str(exc)) from None
        # Stored codes are `NN` or `NN.NN` (validated on every write), so a province matches itself and
        # every code under it by its first two characters, and nothing lies under a regency or city.
        stmt = stmt.where(Violation.subject_region_code == code if "." in code
                          else literal_column(PROVINCE_SQL) == code)
    if filters.nip is not None:  # the route admits only 18 digits with spaces between
        stmt = stmt.where(Violation.subject_nip == normalize_nip(filters.nip))
    if filters.q is not None and filters.q.strip():
        pattern = _like(filters.q.strip())
        searched = (Violation.subject_name, Violation.subject_institution, Violation.description)
        stmt = stmt.where(or_(*(column.ilike(pattern, escape=_LIKE_ESCAPE) for column in searched)))
    if filters.updated_since is not None:
        stmt = stmt.where(Violation.updated_at >= filters.updated_since)
    if filters.overdue is True:
        stmt = stmt.where(_overdue(today))
    elif filters.overdue is False:
        stmt = stmt.where(~_overdue(today) | Violation.follow_up_due_on.is_(None))
    return stmt


def _after_cursor(stmt: Select[Any], sort: Sort, cursor: str) -> Select[Any]:
    sort_name, instant, last_id = decode_cursor(cursor, 3)
    if sort_name != sort.value:
        raise ValidationFailed("the cursor belongs to another sort order",
                               errors=[{"loc": ["query", "cursor"], "msg": f"made for sort={sort_name}"}])
    try:
        at, uid = datetime.fromisoformat(instant), uuid.UUID(last_id)
    except (TypeError, ValueError):
        raise malformed_cursor() from None
    key = tuple_(sort.column, Violation.id)
    bound = tuple_(literal(at, UTCDateTime()), literal(uid, Uuid()))
    return stmt.where(key < bound if sort.descending else key > bound)


def list_records(
    *, session: Session, filters: ViolationFilters, sort: Sort, limit: int, cursor: str | None, today: date
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of records, keyset on (sort timestamp, id): equal timestamps are ordered by id, so a walk
    sees every record once however many share a timestamp."""
    # Plain rows of the table's columns, not ORM objects: a page is read, never changed, and loading 51
    # instances into the session cost more than the query itself (docs/benchmarks.md, "Scale").
    stmt = _filtered(select(*Violation.__table__.columns), filters, today)
    if cursor is not None:
        stmt = _after_cursor(stmt, sort, cursor)
    order = (sort.column.desc(), Violation.id.desc()) if sort.descending else (sort.column, Violation.id)
    rows, next_cursor = split_page(
        list(session.execute(stmt.order_by(*order).limit(limit + 1))), limit,
        lambda r: (sort.value, getattr(r, sort.field_name).isoformat(), str(r.id)),
    )
    return [record_document(r) for r in rows], next_cursor


def history(*, session: Session, violation_id: str) -> list[dict[str, Any]]:
    uid = parse_id(violation_id)
    rows = session.execute(
        select(ViolationVersion.version, ViolationVersion.changed_at, ViolationVersion.agency,
               ViolationVersion.token_id, ViolationVersion.action, ViolationVersion.note,
               ViolationVersion.reason, ViolationVersion.changes)
        .where(ViolationVersion.violation_id == uid)
        .order_by(ViolationVersion.version)
    ).all()
    if not rows:  # every record has its version 1
        raise NotFound(f"no violation record with id {violation_id}")
    return [{
        "version": r.version,
        "changed_at": format_instant(r.changed_at),
        "agency": r.agency,
        "token_id": str(r.token_id) if r.token_id else None,
        "action": r.action,
        "note": r.note,
        "reason": r.reason,
        "changes": r.changes,
    } for r in rows]


def version_document(*, session: Session, violation_id: str, version: int) -> dict[str, Any]:
    uid = parse_id(violation_id)
    document = session.scalar(select(ViolationVersion.document).where(
        ViolationVersion.violation_id == uid, ViolationVersion.version == version))
    if document is None:
        if session.get(Violation, uid) is None:
            raise NotFound(f"no violation record with id {violation_id}")
        raise NotFound(f"violation record {violation_id} has no version {version}")
    return dict(document)


def list_changes(*, session: Session, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Feed entries after `after` in seq order; `next_after` is the last seq returned, or `after`."""
    rows = session.scalars(select(Change).where(Change.seq > after).order_by(Change.seq).limit(limit)).all()
    items: list[dict[str, Any]] = [{
        "seq": r.seq,
        "violation_id": str(r.violation_id),
        "version": r.version,
        "action": r.action,
        "agency": r.agency,
        "changed_at": format_instant(r.changed_at),
    } for r in rows]
    return items, rows[-1].seq if rows else after
