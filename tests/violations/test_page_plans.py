"""Every structured filter of GET /v1/violations, in either sort order and at any depth, is read in index
order: a page walks its 51 index entries instead of sorting every match (docs/benchmarks.md, "Scale").
Checked for each filter on its own: a combination walks the index of one and filters by the others
(several statuses: an index walk in time order filtered by status, or a sort, as the planner judges),
and the selective filters (a NIP, a regency or city) match few records and may sort them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.pagination import encode_cursor
from app.violations.queries import Sort, ViolationFilters, list_records

# Plans follow the tables' statistics, which a reset database keeps from earlier tests.
pytestmark = pytest.mark.fresh_database

FILTERS = {
    "none": ViolationFilters(),
    "status": ViolationFilters(statuses=("reported",)),
    "agency": ViolationFilters(reporting_agency="BKN"),
    "category": ViolationFilters(category="other"),
    "election": ViolationFilters(election_type="pilkada", election_year=2024),
    "province": ViolationFilters(region_code="32"),
}


def page_statement(db: Session, filters: ViolationFilters, sort: Sort, deep: bool) -> tuple[str, Any]:
    """The SQL (and parameters) list_records runs for this page."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    cursor = encode_cursor(sort.value, datetime(2026, 6, 1, tzinfo=UTC).isoformat(), str(uuid.uuid4())) \
        if deep else None
    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        list_records(session=db, filters=filters, sort=sort, limit=50, cursor=cursor, today=date(2026, 6, 1))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    (found,) = [s for s in seen if "FROM violations" in s[0]]
    return found


@pytest.mark.parametrize("deep", [False, True], ids=["first page", "after a cursor"])
@pytest.mark.parametrize("sort", list(Sort))
@pytest.mark.parametrize("name", list(FILTERS))
def test_a_filtered_page_is_read_in_index_order(db: Session, backend: str, name: str, sort: Sort,
                                                 deep: bool) -> None:
    statement, parameters = page_statement(db, FILTERS[name], sort, deep)
    connection = db.connection()
    if backend == "sqlite":
        plan = "\n".join(str(row[-1]) for row in connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {statement}", parameters))
        assert "USING INDEX" in plan or "USING INTEGER PRIMARY KEY" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # a sort of the matches
    else:
        # An empty table, where any plan is cheap: with plain index scans only, the planner shows whether
        # an index gives the order (else it sorts what an index scan returns).
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {statement}", parameters))
        assert "Index Scan" in plan, plan
        assert "Sort" not in plan, plan
    db.rollback()
