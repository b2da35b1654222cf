"""The compiled PostgreSQL reader (`PgReader` in app/audit/_rowhash.c): on the same stored rows, a walk
with it answers exactly as the walk that reads through psycopg, it vouches for every row the service
writes (so it is not merely deferring), and a failed query raises psycopg's own error.

The rows are stored in a copy of the migrated database, in the real audit table (its column types are what
the reader decodes), with the append-only triggers disabled so that each example can start afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.audit import _rowhash, canonical, rowcheck
from app.audit.canonical import ROW_FIELDS
from tests.conftest import PostgresTemplates

# The instants the page query formats (rowcheck._POSTGRES_COLUMNS): others read as NULL there.
LOW, HIGH = datetime(1000, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)
MICRO = timedelta(microseconds=1)
Y2K = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's timestamps count from here
EDGES = [LOW - MICRO, LOW, HIGH - MICRO, HIGH, datetime(1, 1, 1, tzinfo=UTC), Y2K - MICRO, Y2K,
         datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC),
         datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)]
INSTANTS = st.sampled_from(EDGES) | st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC))
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00")
               | st.sampled_from('"\\\x01\n\u2028é😀'), max_size=16)
OPTIONAL = st.none() | TEXT
# JSON the column accepts, in spellings the fast paths read and some they leave to the reference.
ID_LISTS = st.sampled_from(['[]', '["a"]', '["a", "b"]', '["a","b"]', '["a" , "b"]', '[ "a"]', '["a\\"b"]',
                            '["é"]', '["a",  "b"]', '[""]', '[1]', 'null', '{}', '["\\u00e9"]']) \
    | st.lists(TEXT, max_size=3).map(json.dumps)
DETAILS = st.sampled_from(["{}", '{"a": 1}', '{"b": [1.5, null]}', "1", '"x"', "[]", "null",
                                       '{"a": "\\u00e9", "b": {"c": true}}'])
INT4 = st.none() | st.sampled_from([200, 0, -1, 2**31 - 1, -(2**31)]) | st.integers(100, 599)
CHAIN = st.sampled_from(["good", "good", "good", "wrong link", "wrong hash", "forged"])


def instant_json(when: datetime) -> str:
    """`occurred_at` as the page query prints it, zero-padded for any year (the reference's only for the
    formatted range: a hash made with it for an instant outside is one the reader must not accept)."""
    return f'"{when.year:04d}-{when:%m-%dT%H:%M:%S.%f}Z"'


def text_of(row: tuple[Any, ...]) -> bytes | None:
    """The canonical text of a row as stored (occurred_at a datetime), or None where Python's walk has
    none for it (not a list of strings, not JSON)."""
    try:
        detail = canonical.value_json(None if row[18] is None else json.loads(row[18]))
        return canonical.stored_json((*row[:2], None, *row[3:]), instant_json(row[2]),
                                     canonical.stored_list_json(row[14]), detail)
    except Exception:
        return None


def rows_strategy() -> st.SearchStrategy[list[tuple[Any, ...]]]:
    row = st.tuples(
        st.just(0), TEXT, INSTANTS, TEXT, st.sampled_from(["token", "anonymous", "cli"]),
        OPTIONAL, OPTIONAL, TEXT, st.sampled_from(["success", "denied"]), INT4, OPTIONAL, OPTIONAL, OPTIONAL,
        OPTIONAL, ID_LISTS, OPTIONAL, OPTIONAL, OPTIONAL, DETAILS)
    return st.lists(st.tuples(row, CHAIN, st.sampled_from([0, 0, 0, 1, -1, 5])), min_size=1, max_size=6).map(
        chained)


def chained(drawn: list[tuple[tuple[Any, ...], str, int]]) -> list[tuple[Any, ...]]:
    """Rows with seq 1..n shifted by each row's drawn offset (a gap, a repeat or a reordering), linked and
    hashed by kind: "good" by the rule; "wrong link" a right hash of a text linking elsewhere; "wrong hash"
    any other hash; "forged" the hash of a text with `occurred_at` as the reader would print it even where
    the reference would not (outside the formatted range)."""
    out, prev, seen = [], rowcheck.GENESIS_HASH, set()
    for i, (values, kind, offset) in enumerate(drawn):
        seq = max(1, i + 1 + offset)
        if seq in seen:
            continue
        seen.add(seq)
        link = "f" * 64 if kind == "wrong link" else prev
        row = (seq, f"{values[1]}-{seq}", *values[2:], link, "e" * 64)  # unique ids
        in_range = LOW <= row[2] < HIGH
        text = text_of(row)
        if text is not None and kind != "wrong hash" and (in_range or kind == "forged"):
            row = (*row[:20], hashlib.sha256(text).hexdigest())
        out.append(row)
        prev = row[20]
    return out


@pytest.fixture(scope="module")
def scratch(pg_templates: PostgresTemplates | None) -> Iterator[psycopg.Connection[Any]]:
    if pg_templates is None:
        pytest.skip("needs PostgreSQL (SBT_TEST_DATABASE_URL)")
    url = pg_templates.fresh()
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    for table in ("audit_events", "audit_event_resources"):
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    yield conn
    conn.close()
    pg_templates.drop(url)


def store(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    conn.execute("TRUNCATE audit_events CASCADE")
    columns = ", ".join(f'"{field}"' for field in ROW_FIELDS)
    with conn.cursor() as cursor:
        cursor.executemany(f"INSERT INTO audit_events ({columns}) "  # noqa: S608
                           f"VALUES ({', '.join(['%s'] * len(ROW_FIELDS))})", rows)


def check(conn: psycopg.Connection[Any], native: bool, verdict: bool) -> tuple[rowcheck.Outcome,
                                                                               rowcheck.FirstRow]:
    with pytest.MonkeyPatch.context() as patch:
        if not native:
            patch.setattr(rowcheck, "_postgres_reader", lambda _conn: None)
        return rowcheck.check_part(conn, "postgresql", 1, 10**6, lambda _row: verdict)


def test_the_reader_is_used_on_psycopg(scratch: psycopg.Connection[Any]) -> None:
    assert rowcheck._postgres_reader(scratch) is not None


def forged(when: datetime) -> list[tuple[Any, ...]]:
    """One event at `when`, hashed with the instant as the reader would print it."""
    return chained([((0, "i", when, "r", "token", None, "BKN", "a", "success", 200, None, None, None, None,
                      '["x"]', None, None, None, "{}"), "forged", 0)])


@settings(max_examples=250, deadline=None)
@given(rows_strategy(), st.booleans())
@example(forged(LOW - MICRO), False)
@example(forged(HIGH), False)
def test_a_walk_answers_the_same_with_the_reader_and_through_psycopg(
    scratch: psycopg.Connection[Any], rows: list[tuple[Any, ...]], verdict: bool,
) -> None:
    store(scratch, rows)
    assert check(scratch, True, verdict) == check(scratch, False, verdict)


def vouched_to_the_end(conn: psycopg.Connection[Any], rows_per_page: int) -> tuple[int, Any, bool]:
    reader = rowcheck._postgres_reader(conn, rows_per_page)
    assert reader is not None
    details: dict[Any, str] = {}
    try:
        return rowcheck._vouch(reader, 10**6, 1, rowcheck.GENESIS_HASH, details,
                               rowcheck.detail_maker(details))
    finally:
        reader.close()


SERVICE_IDS = st.lists(st.text("abcdef0123456789-", max_size=8), max_size=3).map(json.dumps)


# Details one after another as a log holds them: repeats, and different ones of the same length.
DETAIL_RUN = ["{}", "{}", "[]", '{"version": 7}', '{"version": 4}', '{"version": 4}', "{}", '{"a": "é"}',
              '{"a": "\\u00e9"}', "7" * 300, "8" * 300]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EDGES) | INSTANTS, TEXT, SERVICE_IDS, DETAILS, INT4), min_size=1,
                max_size=8), st.integers(1, 3))
@example([(Y2K, "t", "[]", detail, 200) for detail in DETAIL_RUN], 2)
def test_the_reader_vouches_for_every_row_the_rule_hashes(
    scratch: psycopg.Connection[Any], drawn: list[tuple[datetime, str, str, str | None, int | None]],
    rows_per_page: int,
) -> None:
    """Rows the service could have written (a right hash, an instant in the formatted range, resource ids
    as it spells them) are all vouched for, across pages: the instant printed in C is the query's."""
    rows: list[tuple[Any, ...]] = []
    prev = rowcheck.GENESIS_HASH
    for when, text, ids, detail, status in drawn:
        if not LOW <= when < HIGH:
            continue
        row = (len(rows) + 1, f"i{len(rows)}", when, text, "token", None, "BKN", "a", "success", status,
               "GET", text, None, None, ids, None, None, None, detail, prev, "")
        text_bytes = text_of(row)
        assert text_bytes is not None
        prev = hashlib.sha256(text_bytes).hexdigest()
        rows.append((*row[:20], prev))
    store(scratch, rows)
    assert vouched_to_the_end(scratch, rows_per_page) == (len(rows) + 1, prev, False)


def test_the_reader_reads_the_service_database(db_url: str, client: Any) -> None:
    """On the suite's PostgreSQL database, after requests the service audited, every event is vouched
    for by the reader."""
    if not db_url.startswith("postgresql"):
        pytest.skip("the SQLite reader is tested in test_native.py")
    client.get("/v1/agencies")
    client.get("/v1/audit/events", headers={"Authorization": "Bearer nonsense"})
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        expected, last, more = vouched_to_the_end(conn, 2)
        head = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
    assert head is not None and head[0] >= 2
    assert (expected - 1, last, more) == (head[0], head[1], False)


def test_a_failed_query_raises_psycopgs_error(scratch: psycopg.Connection[Any]) -> None:
    sql = "SELECT no_such_column FROM audit_events WHERE $1::bigint + $2::bigint < $3::bigint"
    pgconn: Any = scratch.pgconn  # pgconn_ptr: documented, not in psycopg's typing protocol
    reader = _rowhash.PgReader(pgconn, pgconn.pgconn_ptr, sql, 10)
    details: dict[Any, str] = {}
    with pytest.raises(psycopg.errors.UndefinedColumn, match="no_such_column"):
        rowcheck._vouch(reader, 10, 1, None, details, rowcheck.detail_maker(details))
    reader.close()
    assert scratch.execute("SELECT 1").fetchone() == (1,)  # the connection is still psycopg's to use


def test_the_reader_finds_libpq_under_psycopgs_ctypes_implementation(db_url: str, client: Any) -> None:
    """With psycopg's pure-Python implementation (libpq through ctypes) the reader uses that libpq."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    client.get("/v1/agencies")
    probe = (
        "import sys, psycopg\n"
        "from psycopg import pq\n"
        "from app.audit import rowcheck\n"
        "conn = psycopg.connect(sys.argv[1])\n"
        "reader = rowcheck._postgres_reader(conn)\n"
        "details = {}\n"
        "print(pq.__impl__, reader.vouch(10**6, 1, rowcheck.GENESIS_HASH, details, "
        "rowcheck.detail_maker(details)))\n"
    )
    url = db_url.replace("postgresql+psycopg://", "postgresql://")
    run = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, check=False,
                         env={**os.environ, "PSYCOPG_IMPL": "python"})
    if "libpq library not found" in run.stderr:
        pytest.skip("no system libpq for psycopg's ctypes implementation")
    with psycopg.connect(url) as conn:
        head = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
    assert head is not None
    assert run.stdout.strip() == f"python ({head[0] + 1}, '{head[1]}', False)", run.stderr


def test_a_lost_connection_raises_psycopgs_operational_error(pg_templates: PostgresTemplates | None) -> None:
    if pg_templates is None:
        pytest.skip("needs PostgreSQL (SBT_TEST_DATABASE_URL)")
    fresh = pg_templates.fresh()
    url = fresh.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(url) as conn, psycopg.connect(url, autocommit=True) as other:
            reader = rowcheck._postgres_reader(conn)
            assert reader is not None
            other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            details: dict[Any, str] = {}
            with pytest.raises(psycopg.OperationalError):
                rowcheck._vouch(reader, 10, 1, None, details, rowcheck.detail_maker(details))
            # Now known to be gone: the query cannot even be sent.
            with pytest.raises(psycopg.OperationalError):
                rowcheck._vouch(reader, 10, 1, None, details, rowcheck.detail_maker(details))
            reader.close()
    finally:
        pg_templates.drop(fresh)


def test_the_reader_is_not_used_on_a_session_it_cannot_read(scratch: psycopg.Connection[Any]) -> None:
    """Text in another client encoding, or a connection in pipeline mode: the driver reads the rows."""
    scratch.execute("SET client_encoding TO 'LATIN1'")
    try:
        assert rowcheck._postgres_reader(scratch) is None
    finally:
        scratch.execute("SET client_encoding TO 'UTF8'")
    with scratch.pipeline():
        assert rowcheck._postgres_reader(scratch) is None
    assert rowcheck._postgres_reader(scratch) is not None
