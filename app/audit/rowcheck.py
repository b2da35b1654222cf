"""Checking stored audit rows by the hash rule, fast: the loop `sbt audit verify` spends its time in.

Rows are read through the database driver itself, in keyset pages, as raw tuples (ROW_FIELDS order; on
PostgreSQL the JSON columns as their text and `occurred_at` already in the API's form, which spares the
driver parsing a timestamp per row), and each canonical text is built straight from the tuple
(`canonical.stored_json`). A row the fast path cannot vouch for (its hash does not match, or a column
holds something unusual) is decided by `recheck`, the reference rule on the row as the ORM loads it, so
the answer is always the reference's; only tampered or unusual rows pay for it. Where the compiled module
(app/audit/_rowhash.c) was built, it reads the rows itself (SQLite's library, or psycopg's libpq on the
same connection) and vouches for the common ones; the walk here decides every row it does not.

This module imports no SQLAlchemy, so that helper processes (`python -m app.audit.rowcheck`, started by
app/audit/stream.py for a long range) start in a fraction of a second. A helper takes parts of the range
off a pipe shared with the other checkers (fixed-size records, so each read takes exactly one), checks
each from the hash stored just before it, and writes one JSON line per part; the first that finds a bad
row empties the pipe, since nothing after it is needed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, TextIO

from app.audit import canonical
from app.audit.canonical import ROW_FIELDS

GENESIS_HASH = "0" * 64
# Rows per query: memory stays small whatever the log's length. On SQLite, in-process, a small page keeps
# the rows' objects in memory the allocator just freed and the CPU cache just held (1,000,000 events on
# one core: 6.0 us each with 200-500 rows, 6.5 with 5,000); a PostgreSQL query costs a round trip.
PAGE = {"sqlite": 256}
PAGE_DEFAULT = 5000
_DETAIL_CACHE = 4096

# (ok, checked, head_seq, head_hash, first_invalid_seq), as app.audit.chain.VerifyResult
Outcome = tuple[bool, int, int, str, int | None]
# (seq, hash) of the first row of a part: a gap just before the part is noticed at that row
FirstRow = tuple[int, str] | None
Recheck = Callable[[Sequence[Any]], bool]

# On PostgreSQL the JSON columns come as their stored text (psycopg would parse them; the text is what
# the cache is keyed by) and `occurred_at` as the API prints it. Years 1000-9999 only, a day clear of
# either end so that no session time zone can push the loaded value out of Python's range: any other
# instant comes back NULL and goes to the reference.
_POSTGRES_COLUMNS = {
    "occurred_at": "CASE WHEN occurred_at >= '1000-01-02 00:00:00+00' "
                   "AND occurred_at < '9999-12-30 00:00:00+00' "
                   "THEN to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END",
    "resource_ids": "resource_ids::text",
    "detail": "detail::text",
}


_STORED_COLUMNS = ", ".join(f'"{field}"' for field in ROW_FIELDS)


def _page_sql(columns: str, after: str, to_seq: str, limit: str) -> str:
    """The page query with the driver's placeholders for its three parameters."""
    return f"SELECT {columns} FROM audit_events WHERE seq > {after} AND seq <= {to_seq} ORDER BY seq LIMIT {limit}"  # noqa: S608, E501


def rows_sql(backend: str) -> str:
    """A page of rows after a seq, up to a seq: parameters (after, to_seq, limit)."""
    if backend == "sqlite":
        return _page_sql(_STORED_COLUMNS, "?", "?", "?")
    columns = ", ".join(_POSTGRES_COLUMNS.get(field, f'"{field}"') for field in ROW_FIELDS)
    return _page_sql(columns, "%s", "%s", "%s")


def _hash_sql(backend: str) -> str:
    return "SELECT hash FROM audit_events WHERE seq = ?" if backend == "sqlite" else \
        "SELECT hash FROM audit_events WHERE seq = %s"


def instant_reader(backend: str) -> Callable[[Any], str]:
    """JSON of `occurred_at` from the raw column the backend's query returns (raises when unusual)."""
    return canonical.sqlite_instant_json if backend == "sqlite" else _quoted


def _quoted(text: str) -> str:
    return '"' + text + '"'  # digits, "-", ":", ".", "T", "Z" only; None (unusual) raises


def pages(conn: Any, backend: str, after: int, to_seq: int) -> Generator[list[Sequence[Any]], None, None]:
    """Raw rows with after < seq <= to_seq in seq order, a page at a time, on a DB-API connection."""
    sql = rows_sql(backend)
    options = {} if backend == "sqlite" else {"prepare": True}
    page = PAGE.get(backend, PAGE_DEFAULT)
    cursor = conn.cursor()
    try:
        while after < to_seq:
            cursor.execute(sql, (after, to_seq, page), **options)
            try:
                rows = cursor.fetchall()
            except Exception as exc:
                if not is_undecodable_text(exc):
                    raise
                rows = _rows_to_undecodable(conn, sql, (after, to_seq, page))
            if not rows:
                return
            yield rows
            after = rows[-1][0]
    finally:
        cursor.close()


# A stored row that cannot be loaded at all: SQLite keeps whatever bytes it is given in a TEXT column, and a
# value that is not UTF-8 fails the driver (and the ORM) when the row is read. Such a row is an invalid
# event; it stands in the walk as its seq and hash with this marker in every other place.
UNLOADABLE = object()


# What the service and the CLI say when such a row is hit outside verification.
UNDECODABLE_TEXT = ("a stored row holds text that is not valid UTF-8 and cannot be read "
                    "(if it is an audit event, `sbt audit verify` names it)")


def is_undecodable_text(exc: BaseException) -> bool:
    """Whether a read failed on stored text that is not UTF-8 (the driver's error, or SQLAlchemy's
    wrapping it): a damaged row, not an outage."""
    error = getattr(exc, "orig", None) or exc
    return type(error).__module__ == "sqlite3" and "Could not decode to UTF-8" in str(error)


def _rows_to_undecodable(conn: Any, sql: str, params: tuple[int, int, int]) -> list[Sequence[Any]]:
    """The page's rows one at a time, up to the first that does not decode, which ends the page as an
    UNLOADABLE row (the walk stops there; the next page starts after it)."""
    rows: list[Sequence[Any]] = []
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
        while True:
            try:
                row = cursor.fetchone()
            except Exception as exc:
                if not is_undecodable_text(exc):
                    raise
                break
            if row is None:
                return rows
            rows.append(row)
    finally:
        cursor.close()
    after = rows[-1][0] if rows else params[0]
    found = conn.execute(
        "SELECT seq, CAST(hash AS BLOB) FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 1",
        (after, params[1])).fetchone()
    if found is None:  # gone since: the rows read are the page
        return rows
    seq, stored_hash = found
    if isinstance(stored_hash, bytes):
        stored_hash = stored_hash.decode("utf-8", "replace")
    rows.append((seq, *[UNLOADABLE] * (len(ROW_FIELDS) - 2), str(stored_hash)))
    return rows


def detail_maker(details: dict[Any, str]) -> Callable[[Any], str]:
    """JSON of a stored `detail` (JSON text or None), kept in `details` by the stored value (raises for
    anything else, or text that is not JSON)."""
    def make_detail(detail: Any) -> str:
        if detail is not None and detail.__class__ is not str:
            raise TypeError("a stored detail is JSON text")
        made = canonical.value_json(None if detail is None else json.loads(detail))
        if len(details) >= _DETAIL_CACHE:
            details.clear()
        details[detail] = made
        return made

    return make_detail


def check_pages(
    pages: Iterable[Sequence[Sequence[Any]]], *, from_seq: int, prev_hash: str | None,
    instant_json: Callable[[Any], str], recheck: Recheck,
) -> Outcome:
    """Walk rows in seq order: each must follow the last with no gap, link to its hash and hash right.

    `prev_hash` is the hash the first row must link to; None checks no link for it unless `from_seq` is 1
    (then the genesis hash). JSON of values that repeat (a batch's timestamp, `{}`, common details) is
    cached by the stored value. The compiled check (app/audit/_rowhash.c), when built, vouches for the
    common rows; each row it stops at is decided here, in full, and it resumes after that row.
    """
    expected = from_seq  # and so expected - from_seq rows have been checked
    prev = GENESIS_HASH if prev_hash is None and from_seq == 1 else prev_hash
    sha256, list_json, plain_values = hashlib.sha256, canonical.stored_list_json, canonical.plain_values
    when_raw: Any = _NOTHING
    when_json = ""
    details: dict[Any, str] = {}
    make_detail = detail_maker(details)
    native = _native_check if instant_json in _NATIVE_INSTANTS else None
    mode = _NATIVE_INSTANTS.get(instant_json, 0)
    for page in pages:
        index, size = 0, len(page)
        json_of: Callable[..., bytes] | None = None
        while index < size:
            if native is not None and page.__class__ is list:
                index, expected, prev = native(page, index, expected, prev, details, make_detail, mode)
                if index == size:
                    break
            row = page[index]
            index += 1
            seq, row_prev, stored_hash = row[0], row[19], row[20]
            try:
                when = row[2]
                if when != when_raw:
                    when_json = instant_json(when)
                    when_raw = when
                detail = row[18]
                detail_json = details.get(detail)
                if detail_json is None:
                    detail_json = make_detail(detail)
                if json_of is None:
                    json_of = canonical.plain_row_json if plain_values(page) else canonical.stored_json
                text = json_of(row, when_json, list_json(row[14]), detail_json)
                good = sha256(text).hexdigest() == stored_hash
            except Exception:  # an unusual row: the reference decides
                good = False
            if not good:
                good = row[1] is not UNLOADABLE and recheck(row)
            if seq != expected or not good or (prev is not None and row_prev != prev):
                return False, expected - from_seq + 1, seq, stored_hash, expected
            prev = stored_hash
            expected += 1
    # The last row's hash (a row that passed holds a 64-digit one), else the one the walk began from.
    return True, expected - from_seq, expected - 1, prev or GENESIS_HASH, None


_NOTHING = object()  # equal to no stored value


try:  # the compiled check, where it was built (setup.py makes it optional): without it the Python loop
    # alone gives the same answers, slower
    from app.audit import _rowhash
except ImportError:
    _rowhash = None  # type: ignore[assignment]

_native_check = None if _rowhash is None else _rowhash.check_rows
# The `occurred_at` readers the compiled check stands in for, by its mode for each.
_NATIVE_INSTANTS: dict[Callable[[Any], str], int] = {} if _rowhash is None else {
    canonical.sqlite_instant_json: _rowhash.INSTANT_SQLITE, _quoted: _rowhash.INSTANT_FORMATTED}


def check_part(conn: Any, backend: str, from_seq: int, to_seq: int, recheck: Recheck,
               prev_hash: str | None = None, *, linked: bool = False) -> tuple[Outcome, FirstRow]:
    """Check seqs from_seq..to_seq on their own: from `prev_hash` when `linked`, else from the hash stored
    just before them (no link is checked for the first row if that row is missing)."""
    if not linked and from_seq > 1:
        prev_hash = _stored_hash(conn, backend, from_seq - 1)
    reader = _sqlite_reader(conn) if backend == "sqlite" else _postgres_reader(conn)
    if reader is not None:
        try:
            return _check_read_natively(reader, conn, backend, from_seq, to_seq, recheck, prev_hash)
        finally:
            reader.close()
    read = pages(conn, backend, from_seq - 1, to_seq)
    try:
        head = next(read, None)
        first: FirstRow = None if head is None else (head[0][0], head[0][20])
        outcome = check_pages(read if head is None else itertools.chain([head], read), from_seq=from_seq,
                              prev_hash=prev_hash, instant_json=instant_reader(backend), recheck=recheck)
    finally:
        # A walk that stops at a bad row leaves the reader unfinished: close its cursor now, while the
        # connection is open, not whenever the garbage collector gets to it (by then the caller may have
        # closed the connection, and the cursor's close raises into the void).
        read.close()
    return outcome, first


def _check_read_natively(reader: Any, conn: Any, backend: str, from_seq: int, to_seq: int, recheck: Recheck,
                         prev_hash: str | None) -> tuple[Outcome, FirstRow]:
    """check_part with a compiled reader: it reads and vouches for rows until one it does not vouch for; a
    page from there is read by the driver and checked here (check_pages), then the reader goes on after
    it."""
    expected = from_seq
    prev = GENESIS_HASH if prev_hash is None and from_seq == 1 else prev_hash
    first: FirstRow = None
    details: dict[Any, str] = {}
    make_detail = detail_maker(details)
    while True:
        start = expected
        expected, prev, more = _vouch(reader, to_seq, expected, prev, details, make_detail)
        if first is None and expected > start:
            first = (start, str(_stored_hash(conn, backend, start)))
        page: list[Sequence[Any]] | None = None
        if more:
            read = pages(conn, backend, expected - 1, to_seq)
            try:
                page = next(read, None)
            finally:
                read.close()
        if page is None:  # to_seq reached, or no row after the last one
            return (True, expected - from_seq, expected - 1, prev or GENESIS_HASH, None), first
        if first is None:
            first = (page[0][0], page[0][20])
        ok, checked, head_seq, head_hash, bad = check_pages(
            [page], from_seq=expected, prev_hash=prev, instant_json=instant_reader(backend), recheck=recheck)
        if not ok:
            return (False, expected - from_seq + checked, head_seq, head_hash, bad), first
        expected, prev = head_seq + 1, head_hash


def _stored_hash(conn: Any, backend: str, seq: int) -> Any:
    """The hash stored for a seq (None if there is no such row)."""
    cursor = conn.cursor()
    try:
        cursor.execute(_hash_sql(backend), (seq,))
        found = cursor.fetchone()
    finally:
        cursor.close()
    return None if found is None else found[0]


def _vouch(reader: Any, *args: Any) -> tuple[int, Any, bool]:
    """reader.vouch(*args); a failed PostgreSQL query raised as psycopg would have raised it."""
    try:
        result: tuple[int, Any, bool] = reader.vouch(*args)
    except _rowhash.PgReaderError as exc:
        import psycopg.errors

        state, message = exc.args
        try:
            error: type[psycopg.Error] = psycopg.errors.lookup(state) if state else psycopg.OperationalError
        except KeyError:
            error = psycopg.DatabaseError
        raise error(message.strip()) from None
    return result


# Rows per query of the compiled readers (SQLite's query is reset between pages, so no read is held long).
NATIVE_PAGE = 5000


def _sqlite_reader(conn: Any) -> Any:
    """The compiled reader on the file of a sqlite3 connection, or None (not built, not a file, or SQLite
    cannot be used from it): the rows are then read through the driver."""
    if _rowhash is None or not _sqlite_found():
        return None
    try:
        path = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
        busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        return _rowhash.SqliteReader(path, rows_sql("sqlite"), NATIVE_PAGE, busy_ms) if path else None
    except Exception:  # an odd connection or file: the driver's read gives the answer or the error
        return None


@functools.cache
def _sqlite_found() -> bool:
    """Whether the compiled reader found SQLite's functions in the sqlite3 driver's own module (once)."""
    import _sqlite3

    module_file: str | None = getattr(_sqlite3, "__file__", None)  # None where it is built into Python
    return module_file is not None and _rowhash.bind_sqlite(module_file)


# The compiled PostgreSQL reader's page query, all columns as stored, results in binary: `occurred_at` is
# then a count of microseconds (the reader prints the instants rows_sql's query prints and vouches for no
# other), a json column its text as stored. Without the casts the server does a third less work.
_NATIVE_POSTGRES_SQL = _page_sql(_STORED_COLUMNS, "$1", "$2", "$3")


def _postgres_reader(conn: Any, rows_per_page: int = NATIVE_PAGE) -> Any:
    """The compiled reader on a psycopg connection, in its transaction, or None (not built, another
    driver, its libpq not found, or a session whose text or time the reader does not read): the rows are
    then read through the driver."""
    if _rowhash is None or not _libpq_found():
        return None
    try:
        pgconn = conn.pgconn
        if pgconn.parameter_status(b"client_encoding") != b"UTF8" \
                or pgconn.parameter_status(b"integer_datetimes") != b"on" or pgconn.pipeline_status:
            return None
        return _rowhash.PgReader(pgconn, pgconn.pgconn_ptr, _NATIVE_POSTGRES_SQL, rows_per_page)
    except Exception:  # not psycopg's connection, or an odd one: the driver's read gives the answer
        return None


@functools.cache
def _libpq_found() -> bool:
    """Whether the compiled reader found libpq's functions in the libpq psycopg uses (once)."""
    try:
        from psycopg import pq
    except ImportError:
        return False
    if pq.__impl__ == "python":  # libpq through ctypes
        from psycopg.pq import _pq_ctypes

        path: str | None = getattr(getattr(_pq_ctypes, "pq", None), "_name", None)
    else:  # psycopg's compiled module, linked with libpq
        path = getattr(sys.modules.get(f"psycopg_{pq.__impl__}.pq"), "__file__", None)
    return path is not None and _rowhash.bind_libpq(path)


# --- the shared queue of parts ------------------------------------------------------------------------

RECORD = 42  # bytes per part on the queue: "%020d %020d\n"


def part_record(from_seq: int, to_seq: int) -> bytes:
    return b"%020d %020d\n" % (from_seq, to_seq)


def serve(conn: Any, backend: str, queue: int, recheck: Recheck,
          report: Callable[[int, int, Outcome, FirstRow], None]) -> None:
    """Check parts taken off the queue until it is empty; after a part with a bad row, empty it."""
    while True:
        record = os.read(queue, RECORD)
        if not record:
            return
        start, end = (int(n) for n in record.split())
        outcome, first = check_part(conn, backend, start, end, recheck)
        report(start, end, outcome, first)
        if not outcome[0]:
            drain(queue)
            return


def drain(queue: int) -> None:
    """Read the queue empty, whole records at a time (others may be reading it too)."""
    while os.read(queue, RECORD * 64):
        pass


def connect(backend: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if backend == "sqlite":
        import sqlite3

        return sqlite3.connect(*args, **kwargs)
    import psycopg

    return psycopg.connect(*args, **kwargs)


def _reference(url: str) -> Recheck:
    """The reference check for a row, set up on first use (it needs SQLAlchemy and the models)."""
    made: list[Recheck] = []

    def recheck(row: Sequence[Any]) -> bool:
        if not made:
            from app.audit.stream import reference_check
            from app.db import make_engine, make_session_factory

            session = make_session_factory(make_engine(url, pool_size=1))()
            made.append(reference_check(session))
        return made[0](row)

    return recheck


def _write_line(out: TextIO) -> Callable[[int, int, Outcome, FirstRow], None]:
    def report(start: int, end: int, outcome: Outcome, first: FirstRow) -> None:
        out.write(json.dumps([start, end, outcome, first]) + "\n")
        out.flush()
    return report


def main() -> int:
    """A helper: the request (backend, connection arguments, URL, queue descriptor) as JSON on stdin."""
    request = json.loads(sys.stdin.read())
    backend = request["backend"]
    conn = connect(backend, request["args"], request["kwargs"])
    try:
        serve(conn, backend, request["queue"], _reference(request["url"]), _write_line(sys.stdout))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
