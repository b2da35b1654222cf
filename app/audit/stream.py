"""Reading the audit log in seq order, in constant memory: documents for export, raw rows for verification.

Verification is the hot path (`sbt audit verify` on tens of millions of events): it reads raw driver rows
in large keyset pages and checks them without building documents (`chain.verify_stored_rows`), and splits
a long range across processes, one per available core: each part is checked from the hash stored just
before it, and the parts are joined exactly as one walk from the start would report them.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Text, bindparam, cast, select
from sqlalchemy.orm import Session

from app.audit.canonical import ROW_FIELDS
from app.audit.chain import StoredRows, VerifyResult, event_document, verify_stored_rows
from app.audit.models import AuditEvent
from app.db import make_engine, make_session_factory

log = logging.getLogger("sbt.audit")

DOCUMENT_CHUNK = 2000
RAW_CHUNK = 5000  # rows per query when verifying: big pages, a few MB of memory
# A range at least this long is verified by several processes (starting one takes about half a second).
SPLIT_MIN_EVENTS = 400_000
MAX_PROCESSES = 4

# (seq, hash) of the first row a part saw, which is the row a gap before the part is noticed at.
FirstRow = tuple[int, str] | None


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
        """`verify_documents(self, from_seq=..., prev_hash=...)`, or None once iterating has begun."""
        if self._documents is not None:
            return None
        self._documents = iter(())
        parts = self._parts(from_seq)
        if parts is None:
            return verify_stored_rows(self.stored_rows(), from_seq=from_seq, prev_hash=prev_hash)
        return _verify_split(self._session, parts, prev_hash)

    def stored_rows(self) -> StoredRows:
        """The stream's events as raw driver rows (ROW_FIELDS order, JSON columns as text)."""
        connection = self._session.connection()
        dialect = connection.dialect
        table = AuditEvent.__table__
        # The dialect's own column types, as the ORM applies them to these columns.
        load_instant = table.c.occurred_at.type.dialect_impl(dialect).result_processor(dialect, None) \
            or _unchanged
        load_json: Callable[[Any], Any] | None = \
            table.c.detail.type.dialect_impl(dialect).result_processor(dialect, None)
        if load_json is None:  # the driver parses JSON itself (psycopg): read the text, parse it the same way
            loads = getattr(dialect, "_json_deserializer", None) or json.loads
            load_json = _none_or(loads)
        return StoredRows(self._raw_rows(connection), load_instant, load_json)

    def _parts(self, from_seq: int) -> list[tuple[int, int]] | None:
        """(first seq, last seq) per process, or None to stay in this one: a short or open-ended range,
        a filtered stream, one core, or a database only this process can see."""
        to_seq = self._to_seq
        if to_seq is None or from_seq != self._from_seq or self._since or self._until:
            return None
        size = to_seq - from_seq + 1
        url = self._session.connection().engine.url
        processes = min(_available_cores(), MAX_PROCESSES)
        in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        if size < SPLIT_MIN_EVENTS or processes < 2 or in_memory:
            return None
        step = -(-size // processes)
        return [(start, min(start + step - 1, to_seq)) for start in range(from_seq, to_seq + 1, step)]

    def _raw_rows(self, connection: Connection) -> Iterator[Sequence[Any]]:
        dialect = connection.dialect
        table = AuditEvent.__table__
        as_text = dialect.name == "postgresql"  # psycopg would parse JSON: read the text, to cache by it
        columns = [cast(table.c[f], Text) if as_text and f in ("resource_ids", "detail") else table.c[f]
                   for f in ROW_FIELDS]
        stmt = select(*columns).where(table.c.seq > bindparam("after"))
        if self._to_seq is not None:
            stmt = stmt.where(table.c.seq <= self._to_seq)
        # Parameters go to the driver as they are, so they are converted here as the ORM would.
        bind_instant = table.c.occurred_at.type.dialect_impl(dialect).bind_processor(dialect) or _unchanged
        values = {}
        if self._since is not None:
            stmt = stmt.where(table.c.occurred_at >= bindparam("since"))
            values["since"] = bind_instant(self._since)
        if self._until is not None:
            stmt = stmt.where(table.c.occurred_at < bindparam("until"))
            values["until"] = bind_instant(self._until)
        compiled = stmt.order_by(table.c.seq).limit(RAW_CHUNK).compile(dialect=dialect)
        sql = str(compiled)
        cursor = connection.connection.cursor()
        try:
            after = self._from_seq - 1
            while True:
                params = compiled.construct_params({"after": after, **values})
                cursor.execute(sql, [params[name] for name in compiled.positiontup or ()]
                               if compiled.positional else params)
                rows = cursor.fetchall()
                if not rows:
                    return
                yield from rows
                after = rows[-1][0]
        finally:
            cursor.close()


def _unchanged(value: Any) -> Any:
    return value


def _none_or(loads: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else loads(value)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def verify_part(session: Session, from_seq: int, to_seq: int) -> tuple[VerifyResult, FirstRow]:
    """Check seqs from_seq..to_seq on their own, from the hash stored before them (if that row exists)."""
    prev_hash = None
    if from_seq > 1:
        prev_hash = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == from_seq - 1))
    stored = EventStream(session, from_seq=from_seq, to_seq=to_seq).stored_rows()
    rows = iter(stored.rows)
    head = next(rows, None)
    first: FirstRow = None if head is None else (head[0], head[20])
    chained = rows if head is None else itertools.chain([head], rows)
    return verify_stored_rows(replace(stored, rows=chained), from_seq=from_seq, prev_hash=prev_hash), first


def _start_helper(url: str, from_seq: int, to_seq: int) -> subprocess.Popen[bytes]:
    """A helper process for one part: `python -m app.audit.stream`, told the part on stdin (which keeps a
    database password out of the process list). A plain interpreter, not multiprocessing, so the caller's
    main module is never imported again."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    helper = subprocess.Popen([sys.executable, "-m", "app.audit.stream"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env)
    assert helper.stdin is not None
    helper.stdin.write(json.dumps({"url": url, "from_seq": from_seq, "to_seq": to_seq}).encode())
    helper.stdin.close()
    return helper


def _helper_answer(helper: subprocess.Popen[bytes]) -> tuple[VerifyResult, FirstRow] | None:
    assert helper.stdout is not None
    output = helper.stdout.read()
    if helper.wait() != 0:
        return None
    answer = json.loads(output)
    first = answer["first_row"]
    return VerifyResult(**answer["result"]), (None if first is None else (first[0], first[1]))


def _verify_split(session: Session, parts: list[tuple[int, int]], prev_hash: str | None) -> VerifyResult:
    """The first part here, the others in helper processes at the same time."""
    url = session.connection().engine.url.render_as_string(hide_password=False)
    helpers = []
    try:
        helpers = [_start_helper(url, start, end) for start, end in parts[1:]]
        start, end = parts[0]
        stored = EventStream(session, from_seq=start, to_seq=end).stored_rows()
        walk = _JoinedWalk(verify_stored_rows(stored, from_seq=start, prev_hash=prev_hash))
        for (start, end), helper in zip(parts[1:], helpers, strict=True):
            if walk.result is not None:
                break
            answer = _helper_answer(helper)
            if answer is None:
                log.warning("audit verify helper for seq %d-%d failed; checking that part here", start, end)
                answer = verify_part(session, start, end)
            walk.add(start, answer)
        return walk.finish()
    finally:
        for helper in helpers:
            if helper.poll() is None:
                helper.kill()
            helper.wait()
            if helper.stdout is not None:
                helper.stdout.close()


def _helper_main() -> int:
    request = json.loads(sys.stdin.read())
    engine = make_engine(request["url"], pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            result, first_row = verify_part(session, request["from_seq"], request["to_seq"])
    finally:
        engine.dispose()
    json.dump({"result": asdict(result), "first_row": first_row}, sys.stdout)
    return 0


class _JoinedWalk:
    """Joins part results in seq order into what one walk over all of them would have returned."""

    def __init__(self, first: VerifyResult) -> None:
        self.checked, self.head_seq, self.head_hash = first.checked, first.head_seq, first.head_hash
        self.result: VerifyResult | None = None if first.ok else first

    def add(self, start: int, outcome: tuple[VerifyResult, FirstRow]) -> None:
        part, first_row = outcome
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


if __name__ == "__main__":
    sys.exit(_helper_main())
