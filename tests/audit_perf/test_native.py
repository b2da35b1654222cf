"""The compiled row check (app/audit/_rowhash.c) vouches only for rows the Python walk finds good, with
the same text, and the walk answers the same with it as without it.

It is built by `pip install -e .` (setup.py); the suite requires it, so that a build that silently failed
on this machine is noticed rather than measured as "verification got slow".
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.audit import _rowhash, canonical, rowcheck
from app.audit.canonical import ROW_FIELDS

SQLITE, FORMATTED = _rowhash.INSTANT_SQLITE, _rowhash.INSTANT_FORMATTED
INSTANT_JSON = {SQLITE: canonical.sqlite_instant_json, FORMATTED: rowcheck._quoted}

# Text of every kind: escapes, controls, non-ASCII, non-BMP, lone surrogates, and the service's own.
TEXT = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
               | st.sampled_from('"\\/\x00\x08\x0c\n\r\t\x1f\x7f\u2028\ufeff%é😀'), max_size=24)
ODD = st.booleans() | st.floats() | st.binary(max_size=4) | st.integers(min_value=2**63, max_value=2**65) \
    | st.integers(min_value=-(2**65), max_value=-(2**63) - 1)
VALUE = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | TEXT
INSTANT_TEXT = st.sampled_from(["2026-11-22 10:00:00.123456", "2024-02-29 23:59:59.999999",
                                "2023-02-29 10:00:00.000000", "0999-01-01 00:00:00.000000",
                                "2026-11-22 24:00:00.000000", "2026-11-22T10:00:00.123456",
                                "2026-11-22T10:00:00.123456Z", "2026-13-01 10:00:00.000000"]) | TEXT
ID_LISTS = st.sampled_from(['[]', '["a"]', '["a", "b"]', '["a","b"]', '["a" , "b"]', '[ "a"]', '["a",]',
                            '["a\\"b"]', '["é"]', '["a",  "b"]', '[""]', '["]', '[1]', 'null']) \
    | st.lists(TEXT.filter(lambda s: s.encode("utf-8", "surrogatepass") == s.encode("utf-8", "ignore")),
               max_size=3).map(json.dumps) | TEXT
DETAILS = st.none() | st.sampled_from(["{}", '{"a": 1}', '{"b": [1.5, null]}', "[", "1", '"x"']) | TEXT


WIDE = {0: st.integers(min_value=-3, max_value=8) | ODD | VALUE, 2: INSTANT_TEXT | ODD | st.none(),
        14: ID_LISTS | ODD | st.none(), 18: DETAILS | ODD}
PLAIN = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from('"\\\x01\n'),
                max_size=16)
OPTIONAL = st.none() | PLAIN


def raw_rows() -> st.SearchStrategy[tuple[Any, ...]]:
    """Rows as a driver returns them: the service's kind of row, with up to three columns changed to
    anything at all (another type, text no driver returns, a near miss of a stored form)."""
    good = st.tuples(
        st.just(1), PLAIN, st.sampled_from(["2026-11-22 10:00:00.123456", "2024-02-29 23:59:59.999999",
                                            "2026-11-22T10:00:00.123456Z"]),
        PLAIN, st.sampled_from(["token", "anonymous", "cli"]), OPTIONAL, OPTIONAL, PLAIN, PLAIN,
        st.none() | st.integers(min_value=100, max_value=599), OPTIONAL, OPTIONAL, OPTIONAL, OPTIONAL,
        st.sampled_from(["[]", '["a"]', '["0194-a", "BKN"]', '["x","y"]']), OPTIONAL, OPTIONAL, OPTIONAL,
        st.none() | st.sampled_from(["{}", '{"a": 1}', '{"b": [1.5, null], "a": "\\u00e9"}']), PLAIN, PLAIN,
    )
    changes = st.lists(st.integers(0, 20).flatmap(
        lambda field: st.tuples(st.just(field), WIDE.get(field, VALUE | ODD))), max_size=3)
    return st.tuples(good, changes).map(
        lambda t: tuple(dict(t[1]).get(i, value) for i, value in enumerate(t[0])))


def python_text(row: tuple[Any, ...], mode: int) -> bytes | None:
    """The Python walk's text for a raw row (canonical.stored_json), or None where it raises."""
    try:
        detail = row[18]
        if detail is not None and detail.__class__ is not str:
            return None
        detail_json = canonical.value_json(None if detail is None else json.loads(detail))
        return canonical.stored_json(row, INSTANT_JSON[mode](row[2]), canonical.stored_list_json(row[14]),
                                     detail_json)
    except Exception:
        return None


def test_the_compiled_check_is_built_and_used() -> None:
    assert rowcheck._native_check is _rowhash.check_rows
    assert set(rowcheck._NATIVE_INSTANTS) == {canonical.sqlite_instant_json, rowcheck._quoted}


@settings(max_examples=3000)
@given(raw_rows(), st.sampled_from([SQLITE, FORMATTED]))
@example((1, "i", "2026-11-22 10:00:00.123456", "r", "token", None, "BKN", "a", "o", 200, "GET", "/p",
          'q="x"\\\x01', "violation", '["a", "b"]', "127.0.0.1", "ua", "p", '{"z": 1, "a": [2.5]}', "0" * 64,
          "h"), SQLITE)
@example((1, "\ud800", "2026-11-22 10:00:00.123456", "r", "k", None, None, "a", "o", None, None, None, None,
          None, "[]", None, None, None, None, "p", "h"), SQLITE)
@example((1, "i", "2026-11-22 10:00:00.123456", "r", "k", None, None, "a", "o", True, None, None, None, None,
          "[]", None, None, None, None, "p", "h"), SQLITE)
@example((2**63 - 1, "i", "2026-11-22T10:00:00.123456Z", "r", "k", None, None, "a", "o", -(2**63), None,
          None, None, None, "[]", None, None, None, "{}", "p", "h"), FORMATTED)
def test_the_compiled_text_is_the_python_text(row: tuple[Any, ...], mode: int) -> None:
    details: dict[Any, str] = {}
    native = _rowhash.row_text(row, details, rowcheck.detail_maker(details), mode)
    # The stored hash is not in the text; a row whose hash is not text is never vouched for (check_rows
    # compares it as text), while Python's check of value types covers it too.
    if native is not None and row[20].__class__ is str:
        assert native == python_text(row, mode)


@given(st.lists(st.sampled_from(["a", "é", "😀", '"', "\\", "\x01", "\t", "x" * 9, "\u2028"]), max_size=12)
       .map("".join), st.sampled_from([SQLITE, FORMATTED]))
def test_rows_the_service_writes_are_vouched_for(text: str, mode: int) -> None:
    """Any str (but a lone surrogate) in any text column and the stored forms of the service: the compiled
    text, never None. (Ids in `resource_ids` are ASCII, stored by json.dumps: a list whose text holds an
    escape is left to Python.)"""
    instant = "2026-11-22 10:00:00.123456" if mode == SQLITE else "2026-11-22T10:00:00.123456Z"
    row = (7, text, instant, text, "token", text, None, text, text, 201, text, text, text, text,
           json.dumps(["0194-a", "BKN"]), text, text, text, json.dumps({"k": text}), "0" * 64, "h")
    details: dict[Any, str] = {}
    native = _rowhash.row_text(row, details, rowcheck.detail_maker(details), mode)
    assert native is not None
    assert native == python_text(row, mode)


SERVICE_ROW = (7, "id", "2026-11-22 10:00:00.123456", "r", "token", "t", "BKN", "a", "o", 200, "GET", "/p",
               None, "violation", '["0194-a", "BKN"]', "127.0.0.1", "ua", None, "{}", "0" * 64, "h")


@pytest.mark.parametrize("instant", [
    "2026-11-22 10:00:00.123456", "2024-02-29 10:00:00.000000", "2023-02-29 10:00:00.000000",
    "2026-04-31 10:00:00.000000", "2026-04-30 10:00:00.000000", "2000-02-29 00:00:00.000000",
    "1900-02-29 00:00:00.000000", "2026-11-22 23:59:59.999999", "2026-11-22 24:00:00.000000",
    "2026-11-22 10:60:00.000000", "2026-11-22 10:00:60.000000", "2026-00-10 10:00:00.000000",
    "2026-11-00 10:00:00.000000", "0999-12-31 23:59:59.999999", "1000-01-01 00:00:00.000000",
    "2026-11-22T10:00:00.123456", "2026-11-22 10:00:00,123456", "2026-11-22 10:00:00.12345",
    "2026-11-22 10:00:00.1234567", "+026-11-22 10:00:00.123456", "2026-1-22 10:00:00.1234567",
])
def test_stored_instants(instant: str) -> None:
    """Each stored form of `occurred_at` near the one the service writes: vouched for exactly when Python's
    shortcut takes it, with its text."""
    row = (*SERVICE_ROW[:2], instant, *SERVICE_ROW[3:])
    details: dict[Any, str] = {}
    assert _rowhash.row_text(row, details, rowcheck.detail_maker(details), SQLITE) == python_text(row, SQLITE)


@pytest.mark.parametrize("ids", ["[]", '["a"]', '["a", "b"]', '["a","b"]', '["a",  "b"]', '["a" , "b"]',
                                 '[ "a"]', '["a" ]', '["a",]', '[,"a"]', '["a""b"]', '["a\\"b"]',
                                 '["é", "😀"]', '[""]', '["]', '[1]', "[null]", "null", "", "[",
                                 '["a",\t"b"]'])
def test_stored_id_lists(ids: str) -> None:
    """Stored `resource_ids` in the spellings json.dumps writes and near misses: vouched for only with
    Python's text (escapes and odd spacing are left to Python)."""
    row = (*SERVICE_ROW[:14], ids, *SERVICE_ROW[15:])
    details: dict[Any, str] = {}
    native = _rowhash.row_text(row, details, rowcheck.detail_maker(details), SQLITE)
    assert native is None or native == python_text(row, SQLITE)
    if ids in ("[]", '["a"]', '["a", "b"]', '["a","b"]', '["é", "😀"]', '[""]'):
        assert native is not None


@settings(max_examples=2000)
@given(st.binary(max_size=24) | st.lists(st.sampled_from(
    [b"a", b"\x80", b"\xc2\x80", b"\xc1\xbf", b"\xe0\x9f\x80", b"\xe0\xa0\x80", b"\xed\x9f\xbf",
     b"\xed\xa0\x80", b"\xef\xbf\xbf", b"\xf0\x8f\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf",
     b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"abcdefgh", b"\xe2\x82"]), max_size=8).map(b"".join))
def test_the_utf8_check_is_pythons(data: bytes) -> None:
    try:
        data.decode("utf-8")
        decodes = True
    except UnicodeDecodeError:
        decodes = False
    assert _rowhash.valid_utf8(data) is decodes


CHAIN = st.sampled_from(["good", "good", "good", "wrong link", "wrong hash", "as drawn"])


def chained(rows: list[tuple[Any, ...]], kinds: list[str], mode: int) -> list[tuple[Any, ...]]:
    """The rows with seq 1..n (a changed seq kept) and the chain fields by kind: "good" links to the hash
    before and holds the hash of its Python text (when it has one), "wrong link" holds the right hash of a
    text that links elsewhere, "wrong hash" links right but holds another hash."""
    out, prev = [], rowcheck.GENESIS_HASH
    for i, (row, kind) in enumerate(zip(rows, kinds, strict=True)):
        row = (i + 1 if row[0] == 1 else row[0], *row[1:])
        if kind != "as drawn":
            link = prev if kind != "wrong link" else "f" * 64
            row = (*row[:19], link, "e" * 64)
            text = python_text(row, mode)
            if text is not None and kind != "wrong hash":
                row = (*row[:20], hashlib.sha256(text).hexdigest())
        out.append(row)
        prev = row[20] if isinstance(row[20], str) else prev
    return out


def walk(rows: list[tuple[Any, ...]], mode: int, native: bool, verdict: bool,
         monkeypatch: pytest.MonkeyPatch) -> rowcheck.Outcome:
    with monkeypatch.context() as patch:
        if not native:
            patch.setattr(rowcheck, "_native_check", None)
        return rowcheck.check_pages([rows[:2], rows[2:]], from_seq=1, prev_hash=None,
                                    instant_json=INSTANT_JSON[mode], recheck=lambda _row: verdict)


@settings(max_examples=400)
@given(st.lists(raw_rows(), min_size=1, max_size=6), st.data(), st.sampled_from([SQLITE, FORMATTED]),
       st.booleans())
def test_a_walk_answers_the_same_with_and_without_it(
    rows: list[tuple[Any, ...]], data: st.DataObject, mode: int, verdict: bool,
) -> None:
    rows = chained(rows, data.draw(st.lists(CHAIN, min_size=len(rows), max_size=len(rows))), mode)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert walk(rows, mode, True, verdict, monkeypatch) == walk(rows, mode, False, verdict, monkeypatch)


# --- SQLite read by the compiled reader ----------------------------------------------------------------

COLUMNS = ", ".join(f'"{field}"' for field in ROW_FIELDS[1:])


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "audit.db"


def stored(path: Path, rows: list[tuple[Any, ...]], *, raw_text: dict[tuple[int, int], bytes]) -> None:
    """A table of the audit columns (no types, no constraints: any value) holding these rows; `raw_text`
    puts bytes into a TEXT value as they are (SQLite keeps text that is not UTF-8)."""
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE audit_events (seq INTEGER PRIMARY KEY, {COLUMNS})")
        # seq is the table's key: an int (a changed one too, which makes a gap or a reordering), once.
        conn.executemany(f"INSERT OR IGNORE INTO audit_events VALUES ({', '.join('?' * len(ROW_FIELDS))})",  # noqa: S608
                         [tuple(v if not isinstance(v, str) else v.encode("utf-8", "surrogatepass").decode(
                             "utf-8", "replace") for v in row) for row in rows])
        for (seq, field), data in raw_text.items():
            conn.execute(f'UPDATE audit_events SET "{ROW_FIELDS[field]}" = CAST(? AS TEXT) '  # noqa: S608
                         "WHERE seq = ?", (data, seq))
    conn.close()


def check_file(path: Path, native: bool, verdict: bool) -> tuple[rowcheck.Outcome, rowcheck.FirstRow]:
    with pytest.MonkeyPatch.context() as patch:
        if not native:
            patch.setattr(rowcheck, "_sqlite_reader", lambda _conn: None)
        conn = sqlite3.connect(path)
        try:
            return rowcheck.check_part(conn, "sqlite", 1, 10**6, lambda _row: verdict)
        finally:
            conn.close()


@settings(max_examples=150, deadline=None)
@given(st.lists(raw_rows(), min_size=1, max_size=6), st.data(), st.booleans())
@example([(1, "i", "2026-11-22 10:00:00.123456", "r", "k", None, None, "a", "o", 200, None, None, None, None,
           '["x"]', None, None, None, "{}", None, None)] * 3, None, False)
def test_the_sqlite_reader_answers_as_the_driver_walk(
    scratch: Path, rows: list[tuple[Any, ...]], data: st.DataObject | None, verdict: bool,
) -> None:
    kinds = ["good"] * len(rows) if data is None else data.draw(
        st.lists(CHAIN, min_size=len(rows), max_size=len(rows)))
    rows = chained([tuple(v if v.__class__ is not int or -(2**63) <= v < 2**63 else str(v) for v in row)
                    for row in rows], kinds, SQLITE)
    rows = [row if row[0].__class__ is int else (i + 1, *row[1:]) for i, row in enumerate(rows)]
    raw_text: dict[tuple[int, int], bytes] = {}
    if data is not None and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(rows) - 1))
        field = data.draw(st.sampled_from([1, 3, 11, 14, 17, 18, 20]))
        raw = data.draw(st.sampled_from([b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                         b"\xc0\xaf", b"ok \xc3\xa9"]))
        if field in (1, 3, 11, 17) and rows[index][0].__class__ is int:
            # The hash of the text with these bytes in it, as if it had been written so: only a check of
            # the bytes (the driver cannot decode them) tells this row from a good one.
            row = (*rows[index][:field], "PLACEHOLDER", *rows[index][field + 1:])
            text = python_text(row, SQLITE)
            if text is not None:
                rows[index] = (*row[:20], hashlib.sha256(text.replace(b"PLACEHOLDER", raw)).hexdigest())
        raw_text[(rows[index][0], field)] = raw
    stored(scratch, rows, raw_text=raw_text)
    assert check_file(scratch, True, verdict) == check_file(scratch, False, verdict)


def test_the_sqlite_reader_reads_the_service_database(settings: Any) -> None:
    """On the test database (a file on SQLite) verification goes through the compiled reader."""
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the compiled reader is for SQLite files; PostgreSQL rows go through check_rows")
    conn = sqlite3.connect(settings.database_url.split(":///", 1)[1])
    try:
        reader = rowcheck._sqlite_reader(conn)
        assert reader is not None
        details: dict[Any, str] = {}
        expected, prev, more = reader.vouch(10**6, 1, rowcheck.GENESIS_HASH, details,
                                            rowcheck.detail_maker(details))
        reader.close()
        head = conn.execute("SELECT max(seq), (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) "
                            "FROM audit_events").fetchone()
    finally:
        conn.close()
    assert (expected - 1, more) == ((head[0] or 0), False)
    if head[0]:
        assert prev == head[1]


# Details one after another as a log holds them: repeats, and different ones of the same length and kind.
DETAIL_RUN = [None, "{}", "{}", "[]", None, '{"version": 7}', '{"version": 4}', '{"version": 4}', "{}", None,
              '{"a": "\\u00e9"}', '{"a": "é"}', '"' + "x" * 300 + '"', '"' + "y" * 300 + '"']


def test_the_sqlite_reader_vouches_for_rows_with_changing_details(scratch: Path) -> None:
    """Every good row is vouched for, whatever detail the row before it had (the reader remembers the last
    one's JSON: a stale memory would stop it here)."""
    rows = chained([(1, *SERVICE_ROW[1:18], detail, *SERVICE_ROW[19:]) for detail in DETAIL_RUN],
                   ["good"] * len(DETAIL_RUN), SQLITE)
    stored(scratch, rows, raw_text={})
    conn = sqlite3.connect(scratch)
    try:
        reader = rowcheck._sqlite_reader(conn)
        assert reader is not None
        details: dict[Any, str] = {}
        assert reader.vouch(10**6, 1, rowcheck.GENESIS_HASH, details, rowcheck.detail_maker(details)) \
            == (len(rows) + 1, rows[-1][20], False)
        reader.close()
    finally:
        conn.close()
