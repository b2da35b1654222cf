"""The fast verification (raw rows, split across processes) answers exactly as the document walk does.

Every case runs `app.audit.service.verify` three ways on the same database — the document walk (the
reference), the raw-row walk, and the raw-row walk split into parts — on intact and tampered logs.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, update
from sqlalchemy.orm import Session

from app.audit import rowcheck, service, stream
from app.audit.chain import EventDraft, VerifyResult, append_events
from app.audit.models import ChainHead
from app.audit.stream import EventStream
from app.config import Settings
from app.db import begin_write, make_engine, make_session_factory
from tests.audit.conftest import (
    EVENTS,
    forged_row,
    insert_row,
    rehash,
    remove_events,
    rewrite_from,
    stored_row,
    tampering,
)

HEAD = 40  # four batches of ten: batches share a timestamp, as group commits do


def draft(i: int) -> EventDraft:
    token = i % 3 != 0
    return EventDraft(
        request_id=f"req-{i}", actor_kind="token" if token else "anonymous",
        actor_token_id=str(uuid.UUID(int=i)) if token else None, actor_agency="BKN" if token else None,
        action="violation.read" if token else "auth.failed", outcome="success" if i % 5 else "rejected",
        status_code=200 if i % 5 else 404, method="GET", path=f"/v1/violations/{uuid.UUID(int=i + 1000)}",
        query='q=ä\t"x"\\&limit=5' if i % 4 == 0 else None, resource_type="violation" if token else None,
        resource_ids=[str(uuid.UUID(int=i * 7 + k)) for k in range(i % 4)], client_ip="127.0.0.1",
        user_agent="agent \\ \u2028 😀 \x7f", purpose="tujuan — é" if i % 2 else None,
        detail={"z": [1, 2.5, None, True], "a": {"ü": "\x01\"", "b": []}} if i % 3 == 0 else {},
    )


@pytest.fixture
def log(settings: Settings) -> Iterator[str]:
    engine = make_engine(settings.database_url, pool_size=1)
    with make_session_factory(engine)() as session:
        for batch in range(4):
            begin_write(session)
            append_events(session, [draft(batch * 10 + i) for i in range(10)])
            session.commit()
    engine.dispose()
    yield settings.database_url


def three_ways(db: Session, monkeypatch: pytest.MonkeyPatch, *, reference: bool = True,
               **range_: Any) -> list[VerifyResult]:
    """(reference, raw rows, raw rows in parts of ten shared by three checkers), each in a transaction of
    its own; without the reference when it cannot read the log at all."""
    results = []
    if reference:
        with monkeypatch.context() as m:
            m.setattr(EventStream, "verify_chain", lambda self, **_: None)  # back to the document walk
            results.append(service.verify(db, **range_))
        db.rollback()
    results.append(service.verify(db, **range_))
    db.rollback()
    with monkeypatch.context() as m:
        m.setattr(stream, "SPLIT_MIN_EVENTS", 1)
        m.setattr(stream, "MIN_PART_EVENTS", 10)
        m.setattr(stream, "_available_cores", lambda: 3)
        m.setattr(stream, "start_helper", _ThreadHelper)
        m.setattr(stream, "helper_answers", _ThreadHelper.answers)
        results.append(service.verify(db, **range_))
    db.rollback()
    return results


class _ThreadHelper:
    """A helper process stand-in: the same queue and part checks on a connection of its own, in a thread."""

    stdout = None

    def __init__(self, engine: Engine, queue: int) -> None:
        self.found: list[tuple[int, int, rowcheck.Outcome, rowcheck.FirstRow]] = []
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        kwargs = {k: v for k, v in kwargs.items() if k != "context"}
        url = engine.url.render_as_string(hide_password=False)

        def work() -> None:
            conn = rowcheck.connect(engine.dialect.name, list(args), kwargs)
            try:
                rowcheck.serve(conn, engine.dialect.name, queue, rowcheck._reference(url),
                               lambda *answer: self.found.append(answer))
            finally:
                conn.close()

        self.thread = threading.Thread(target=work)
        self.thread.start()

    def answers(self) -> Iterator[tuple[int, int, rowcheck.Outcome, rowcheck.FirstRow]]:
        self.thread.join()
        return iter(self.found)

    def poll(self) -> int:
        return 0

    def wait(self) -> int:
        return 0


def same_answer(results: list[VerifyResult]) -> VerifyResult:
    reference, *fast = results
    for result in fast:
        assert result == reference
    return reference


def set_column(seq: int, **values: Any) -> Callable[[Connection], None]:
    def edit(conn: Connection) -> None:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == seq).values(**values))
    return edit


def set_raw(seq: int, sql: str) -> Callable[[Connection], None]:
    statement = f"UPDATE audit_events SET {sql} WHERE seq = {seq}"  # noqa: S608 - the test's own text

    def edit(conn: Connection) -> None:
        conn.exec_driver_sql(statement)
    return edit


def edited_and_rehashed(seq: int, **values: Any) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == seq).values(**values))
        rehash(conn, seq)
    return tamper


def rewritten_from(seq: int, **values: Any) -> Callable[[Connection], None]:
    """Edit an event and recompute every hash after it and the head row: undetectable without a checkpoint."""
    def tamper(conn: Connection) -> None:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == seq).values(**values))
        prev = stored_row(conn, seq - 1)["hash"]
        for n in range(seq, HEAD + 1):
            prev = rehash(conn, n, prev_hash=prev)
        conn.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=HEAD, hash=prev))
    return tamper


def removed(*seqs: int) -> Callable[[Connection], None]:
    return lambda conn: remove_events(conn, list(seqs))


def swapped(a: int, b: int) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        for old, new in ((a, -1), (b, a), (-1, b)):
            conn.execute(update(EVENTS).where(EVENTS.c.seq == old).values(seq=new))
    return tamper


def appended_past_the_head(conn: Connection) -> None:
    insert_row(conn, forged_row(conn, HEAD + 1, prev_hash=stored_row(conn, HEAD)["hash"], template_seq=3))


def several(*tampers: Callable[[Connection], None]) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        for each in tampers:
            each(conn)
    return tamper


CASES: dict[str, Callable[[Connection], None]] = {
    "intact": lambda conn: None,
    "column edited": set_column(7, path="/v1/forged"),
    "column edited with its hash": edited_and_rehashed(7, client_ip="203.0.113.9"),
    "rehashed at a part's end": edited_and_rehashed(10, client_ip="203.0.113.9"),
    "quote and backslash in a column, rehashed": edited_and_rehashed(9, user_agent='a"b\\c\n'),
    "detail edited": set_column(12, detail={"forged": True}),
    "resource_ids not a list": set_raw(15, "resource_ids = '5'"),
    "resource_ids a string, rehashed": edited_and_rehashed(15, resource_ids="abc"),
    "status_code null, rehashed": edited_and_rehashed(16, status_code=None, method="PUT"),
    "rewritten from the middle": rewritten_from(18, purpose="hidden"),
    "removed in the middle": removed(10),
    "removed at a part's start": removed(11),
    "removed across parts": removed(10, 11),
    "a whole part removed": removed(*range(11, 21)),
    "removed at the end": removed(38, 39, 40),
    "swapped across parts": swapped(10, 11),
    "bad in the first and third parts": several(set_column(5, action="x"), set_column(25, action="y")),
    "bad in the last part": set_column(33, outcome="error"),
    "appended past the head": appended_past_the_head,
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fast_paths_answer_as_the_document_walk(
    log: str, db: Session, monkeypatch: pytest.MonkeyPatch, case: Callable[[Connection], None]
) -> None:
    with tampering(log) as conn:
        case(conn)
    reference = same_answer(three_ways(db, monkeypatch))
    assert reference.ok == (case is CASES["intact"] or case is CASES["rewritten from the middle"])


def test_timestamps_that_do_not_load_are_bad_events(
    log: str, db: Session, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tampering(log) as conn:
        if backend == "sqlite":
            conn.exec_driver_sql("UPDATE audit_events SET occurred_at = '2026-02-30 10:00:00.000000' "
                                 "WHERE seq = 21")
            conn.exec_driver_sql("UPDATE audit_events SET occurred_at = 'garbage' WHERE seq = 30")
        else:
            conn.exec_driver_sql("UPDATE audit_events SET occurred_at = occurred_at "
                                 "+ interval '1 microsecond' WHERE seq = 21")
    reference = same_answer(three_ways(db, monkeypatch))
    assert reference.first_invalid_seq == 21


def test_values_sqlite_keeps_in_columns_of_another_type(
    log: str, db: Session, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "sqlite":
        pytest.skip("PostgreSQL columns hold only their own type")
    with tampering(log) as conn:
        conn.exec_driver_sql("UPDATE audit_events SET status_code = 'abc', detail = X'7B7D' WHERE seq = 16")
        rehash(conn, 16)
        conn.exec_driver_sql("UPDATE audit_events SET status_code = 200.5 WHERE seq = 26")
        rehash(conn, 26)
    assert same_answer(three_ways(db, monkeypatch)).first_invalid_seq == 17


@pytest.mark.parametrize("seqs", [(7, 25), (11,), (10, 11)], ids=["mid-part", "part start", "part end"])
def test_text_that_is_not_utf8_is_a_bad_event(
    log: str, db: Session, backend: str, monkeypatch: pytest.MonkeyPatch, seqs: tuple[int, ...]
) -> None:
    """A TEXT value SQLite cannot decode fails the driver's fetch of its whole page: the walk names that
    event instead of failing, alone and in parts. (The document walk cannot load such a row at all.)"""
    if backend != "sqlite":
        pytest.skip("PostgreSQL stores only valid text in a UTF-8 database")
    with tampering(log) as conn:
        for seq in seqs:
            set_raw(seq, "path = CAST(X'2F7631FF' AS TEXT)")(conn)
    raw, split = three_ways(db, monkeypatch, reference=False)
    assert raw == split
    bad = seqs[0]
    assert (raw.ok, raw.first_invalid_seq, raw.checked, raw.head_seq) == (False, bad, bad, bad - 1)


def test_unusual_but_valid_rows_verify_and_edits_of_them_do_not(
    log: str, db: Session, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows the fast path cannot vouch for go to the reference: stored text the service does not write
    itself but that loads as a valid event, timestamps at the edges of what the fast path takes. (The
    chain is recomputed after the edits, as a rewrite would.)"""
    if backend == "sqlite":
        edits = ["occurred_at = '2026-11-22T10:00:00.5'",  # loads, but not the service's spelling
                 "occurred_at = '1000-01-01 00:00:00.000000'",
                 "occurred_at = '0999-12-31 23:59:59.999999'"]  # printed without padding the year
    else:
        edits = [f"occurred_at = '{value}'" for value in (
            "1000-01-01 00:00:00+00", "1000-01-02 00:00:00+00", "9999-12-29 23:59:59.999999+00",
            "2026-11-22 10:00:00+07")]
    edits += ["resource_ids = '[\"\\u00e9\", \"a\"]'", "resource_ids = '[\"a\",\"b\"]'",
              "detail = '{\"b\": 1, \"a\": [2]}'"]
    with tampering(log) as conn:
        for seq, edit in enumerate(edits, start=3):
            set_raw(seq, edit)(conn)
        rewrite_from(conn, 3, HEAD)
    intact = same_answer(three_ways(db, monkeypatch))
    assert intact.ok and intact.checked == HEAD
    with tampering(log) as conn:
        set_raw(9, "detail = '{\"b\": 1, \"a\": [3]}'")(conn)  # edited, not rehashed
    assert same_answer(three_ways(db, monkeypatch)).first_invalid_seq == 9


def test_a_blob_of_the_same_bytes_does_not_load(
    log: str, db: Session, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps a BLOB in a text column: the API could not serve that event, so it does not verify."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL columns hold only their own type")
    with tampering(log) as conn:
        conn.exec_driver_sql("UPDATE audit_events SET request_id = CAST(request_id AS BLOB) WHERE seq = 7")
    assert same_answer(three_ways(db, monkeypatch)).first_invalid_seq == 7


@pytest.mark.parametrize(("from_seq", "to_seq"), [(1, 40), (12, 33), (31, 40), (40, 40)])
def test_ranges_answer_as_the_document_walk(
    log: str, db: Session, monkeypatch: pytest.MonkeyPatch, from_seq: int, to_seq: int
) -> None:
    intact = same_answer(three_ways(db, monkeypatch, from_seq=from_seq, to_seq=to_seq))
    assert intact.ok and intact.checked == to_seq - from_seq + 1
    with tampering(log) as conn:
        removed(20, 21)(conn)
    same_answer(three_ways(db, monkeypatch, from_seq=from_seq, to_seq=to_seq))


def test_helper_processes_check_their_parts(log: str, db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real thing: parts checked by `python -m app.audit.rowcheck` processes."""
    monkeypatch.setattr(stream, "SPLIT_MIN_EVENTS", 1)
    monkeypatch.setattr(stream, "MIN_PART_EVENTS", 5)
    monkeypatch.setattr(stream, "_available_cores", lambda: 3)
    intact = service.verify(db)
    db.rollback()
    assert intact.ok and intact.checked == HEAD
    with tampering(log) as conn:
        set_column(33, outcome="error")(conn)
    broken = service.verify(db)
    assert (broken.ok, broken.first_invalid_seq, broken.checked) == (False, 33, 33)
    db.rollback()
    with tampering(log) as conn:
        edited_and_rehashed(12, user_agent='"')(conn)  # a helper asks the reference about this one
    assert service.verify(db).first_invalid_seq == 13


def test_parts_cover_the_range_in_order() -> None:
    for first, last, processes in [(1, 10, 2), (1, 1_000_000, 2), (5, 10_000_003, 4), (7, 7, 3)]:
        parts = stream.split(first, last, processes)
        assert parts[0][0] == first and parts[-1][1] == last and len(parts) <= stream.MAX_PARTS
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(parts))
