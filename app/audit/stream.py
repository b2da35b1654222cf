"""Reading the audit log in seq order, in constant memory: documents for export, raw rows for verification.

Verification is the hot path (`sbt audit verify` on tens of millions of events): the stream checks raw
driver rows instead of building documents (app/audit/rowcheck.py), and splits a long range into parts
taken off a shared queue by this process and one helper process per further available core: each part is
checked from the hash stored just before it, and the parts are joined exactly as one walk from the start
would report them. Parts are small enough that a core slowed by other work just takes fewer of them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.audit import rowcheck
from app.audit.chain import VerifyResult, event_document, event_hash
from app.audit.models import AuditEvent

log = logging.getLogger("sbt.audit")

DOCUMENT_CHUNK = 2000
# A range at least this long is split across processes (a helper starts in well under a second).
SPLIT_MIN_EVENTS = 100_000
MAX_PROCESSES = 4
PARTS_PER_PROCESS = 128  # parts small enough to even out cores slowed by other work, and the last part
MIN_PART_EVENTS = 10_000
MAX_PARTS = 256  # the queue's records and each helper's answers fit in a pipe's buffer
_NO_END = 2**63 - 1

FirstRow = rowcheck.FirstRow


class EventStream(Iterator[dict[str, Any]]):
    """Events in seq order, fetched in chunks by keyset so memory stays constant on any log size.

    Iterating yields the documents the API returns. `verify_documents` hands an untouched stream to
    `verify_chain`, which checks the stored rows instead: the same result, several times faster.
    """

    def __init__(self, session: Session, *, from_seq: int = 1, to_seq: int | None = None,
                 since: datetime | None = None, until: datetime | None = None) -> None:
        self._session = session
        self._from_seq, self._to_seq, self._since, self._until = from_seq, to_seq, since, until
        self._documents: Iterator[dict[str, Any]] | None = None

    def __next__(self) -> dict[str, Any]:
        if self._documents is None:
            self._documents = self._read_documents()
        return next(self._documents)

    def _read_documents(self) -> Iterator[dict[str, Any]]:
        columns = AuditEvent.__table__.columns
        last = self._from_seq - 1
        while True:
            stmt = select(*columns).where(columns.seq > last)
            if self._to_seq is not None:
                stmt = stmt.where(columns.seq <= self._to_seq)
            if self._since is not None:
                stmt = stmt.where(columns.occurred_at >= self._since)
            if self._until is not None:
                stmt = stmt.where(columns.occurred_at < self._until)
            rows = self._session.execute(stmt.order_by(columns.seq).limit(DOCUMENT_CHUNK)).all()
            if not rows:
                return
            for row in rows:
                yield event_document(row)
            last = rows[-1].seq

    # --- verification ---------------------------------------------------------------------------------

    def verify_chain(self, *, from_seq: int, prev_hash: str | None) -> VerifyResult | None:
        """`verify_documents(self, from_seq=..., prev_hash=...)`, or None (walk the documents instead) once
        iterating has begun, for a stream filtered by time, or when JSON columns load another way."""
        if self._documents is not None or self._since is not None or self._until is not None:
            return None
        connection = self._session.connection()
        if getattr(connection.dialect, "_json_deserializer", None) is not None:
            return None
        self._documents = iter(())
        to_seq = _NO_END if self._to_seq is None else self._to_seq
        processes = self._processes(from_seq, to_seq)
        if processes > 1:
            return _verify_split(self._session, from_seq, to_seq, prev_hash, processes)
        outcome, _ = rowcheck.check_part(_driver(self._session), connection.dialect.name, from_seq, to_seq,
                                         reference_check(self._session), prev_hash, linked=True)
        return VerifyResult(*outcome)

    def _processes(self, from_seq: int, to_seq: int) -> int:
        """How many processes check the range: one for a short or open-ended range, one core, or a
        database only this process can see."""
        url = self._session.connection().engine.url
        in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        if to_seq == _NO_END or to_seq - from_seq + 1 < SPLIT_MIN_EVENTS or in_memory:
            return 1
        return min(_available_cores(), MAX_PROCESSES)


def reference_check(session: Session) -> Callable[[Sequence[Any]], bool]:
    """Whether a stored row (raw, as rowcheck reads it) hashes right by the reference rule: the row as the
    ORM loads it, made into the API's document by `event_document`, hashed by `event_hash`. A row that does
    not load as an event (a timestamp that is none, JSON that is not a list) does not."""
    columns = AuditEvent.__table__.columns

    def recheck(row: Sequence[Any]) -> bool:
        result = session.execute(select(*columns).where(columns.seq == row[0]))
        try:
            stored = result.one_or_none()
            return stored is not None and event_hash(event_document(stored)) == row[20]
        except SQLAlchemyError:
            raise
        except Exception:
            return False

    return recheck


def _driver(session: Session) -> Any:
    """The DB-API connection under the session's (in its transaction)."""
    return session.connection().connection.driver_connection


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def split(from_seq: int, to_seq: int, processes: int) -> list[tuple[int, int]]:
    """The parts of a range, in order: (first seq, last seq)."""
    size = to_seq - from_seq + 1
    step = max(MIN_PART_EVENTS, -(-size // (processes * PARTS_PER_PROCESS)), -(-size // MAX_PARTS))
    return [(start, min(start + step - 1, to_seq)) for start in range(from_seq, to_seq + 1, step)]


def _verify_split(session: Session, from_seq: int, to_seq: int, prev_hash: str | None,
                  processes: int) -> VerifyResult:
    """This process checks the first part (from `prev_hash`), then takes parts off the queue with the
    helpers; the answers are joined in seq order."""
    parts = split(from_seq, to_seq, processes)
    connection = session.connection()
    backend, driver, recheck = connection.dialect.name, _driver(session), reference_check(session)
    answers: dict[int, tuple[rowcheck.Outcome, FirstRow]] = {}

    def keep(start: int, _end: int, outcome: rowcheck.Outcome, first: FirstRow) -> None:
        answers[start] = (outcome, first)

    queue, feed = os.pipe()
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        with os.fdopen(feed, "wb") as writer:  # every part but the first; closed, so readers see the end
            writer.write(b"".join(rowcheck.part_record(start, end) for start, end in parts[1:]))
        helpers = [start_helper(connection.engine, queue) for _ in range(processes - 1)]
        start, end = parts[0]
        answers[start] = rowcheck.check_part(driver, backend, start, end, recheck, prev_hash, linked=True)
        if answers[start][0][0]:
            rowcheck.serve(driver, backend, queue, recheck, keep)
        else:
            rowcheck.drain(queue)
        for helper in helpers:
            for start, _end, outcome, first in helper_answers(helper):
                answers[start] = (outcome, first)
        walk = _JoinedWalk(VerifyResult(*answers[parts[0][0]][0]))
        for start, end in parts[1:]:
            if walk.result is not None:
                break
            answer = answers.get(start)
            if answer is None:  # its helper failed
                log.warning("audit verify: no helper answered for seq %d-%d; checking it here", start, end)
                answer = rowcheck.check_part(driver, backend, start, end, recheck)
            walk.add(start, answer)
        return walk.finish()
    finally:
        os.close(queue)
        for helper in helpers:
            if helper.poll() is None:
                helper.kill()
            helper.wait()
            if helper.stdout is not None:
                helper.stdout.close()


def start_helper(engine: Engine, queue: int) -> subprocess.Popen[bytes]:
    """A helper process, `python -m app.audit.rowcheck`, sharing the queue; told how to connect on stdin
    (which keeps a database password out of the process list). A plain interpreter, not multiprocessing,
    so the caller's main module is never imported again."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs = {k: v for k, v in kwargs.items() if isinstance(v, str | int | float | bool)}
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    helper = subprocess.Popen([sys.executable, "-m", "app.audit.rowcheck"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, pass_fds=(queue,))
    assert helper.stdin is not None
    request = {"backend": engine.dialect.name, "args": list(args), "kwargs": kwargs, "queue": queue,
               "url": engine.url.render_as_string(hide_password=False)}
    helper.stdin.write(json.dumps(request).encode())
    helper.stdin.close()
    return helper


def helper_answers(helper: subprocess.Popen[bytes]) -> Iterator[tuple[int, int, rowcheck.Outcome, FirstRow]]:
    """The parts a helper checked, as it reported them (all it finished, even if it failed later)."""
    assert helper.stdout is not None
    output = helper.stdout.read()
    if helper.wait() != 0:
        log.warning("audit verify helper exited with %s", helper.returncode)
    for line in output.decode().splitlines():
        try:
            start, end, outcome, first = json.loads(line)
        except ValueError:
            continue  # cut off by a crash
        yield start, end, tuple(outcome), None if first is None else (first[0], first[1])


class _JoinedWalk:
    """Joins part results in seq order into what one walk over all of them would have returned."""

    def __init__(self, first: VerifyResult) -> None:
        self.checked, self.head_seq, self.head_hash = first.checked, first.head_seq, first.head_hash
        self.result: VerifyResult | None = None if first.ok else first

    def add(self, start: int, outcome: tuple[rowcheck.Outcome, FirstRow]) -> None:
        part, first_row = VerifyResult(*outcome[0]), outcome[1]
        if self.head_seq < start - 1:
            # Events are missing before this part: one walk would stop at the first row after the gap.
            if first_row is not None:
                self.result = VerifyResult(False, self.checked + 1, first_row[0], first_row[1],
                                           self.head_seq + 1)
            return
        if not part.ok:
            self.result = replace(part, checked=self.checked + part.checked)
            return
        self.checked += part.checked
        if part.checked:
            self.head_seq, self.head_hash = part.head_seq, part.head_hash

    def finish(self) -> VerifyResult:
        if self.result is not None:
            return self.result
        return VerifyResult(True, self.checked, self.head_seq, self.head_hash, None)
