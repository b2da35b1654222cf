"""Audit-test helpers: run the `sbt` CLI in-process, build a small log, and tamper with it behind the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Table, create_engine, delete, insert, select, update

from app.audit.chain import EVENT_COLUMNS, event_document, event_hash
from app.audit.models import AuditEvent, AuditEventResource, ChainHead
from app.cli import main
from app.config import Settings, get_settings
from tests.conftest import TokenFactory, bearer

EVENTS = cast(Table, AuditEvent.__table__)


@dataclass
class CliRun:
    code: int
    out: str
    err: str


Sbt = Callable[..., CliRun]


@pytest.fixture
def sbt(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Sbt]:
    """sbt("audit", "verify") -> CliRun(exit code, stdout, stderr), against this test's database."""
    monkeypatch.setenv("SBT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SBT_SIGNING_KEY_FILE", str(settings.key_file))
    monkeypatch.setenv("SBT_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()

    def run(*argv: str) -> CliRun:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    yield run
    get_settings.cache_clear()


@dataclass
class AuditLog:
    """A log of a few kinds of events; `auditor` holds audit:read and admin (BKN), `reader` (BAWASLU) not."""

    auditor: str
    reader: str
    head: int


def build_log(client: TestClient, issue_token: TokenFactory) -> AuditLog:
    auditor = issue_token("BKN", "audit:read", "admin")  # seq 1: token.create (cli)
    reader = issue_token("BAWASLU", "violations:read")  # seq 2: token.create (cli)
    for _ in range(4):  # seq 3-6: agency.list
        assert client.get("/v1/agencies", headers=bearer(reader)).status_code == 200
    assert client.get("/v1/agencies").status_code == 401  # seq 7: auth.failed
    assert client.get("/v1/audit/events", headers=bearer(reader)).status_code == 403  # seq 8
    assert client.get("/v1/nowhere", headers=bearer(reader)).status_code == 404  # seq 9: request
    assert client.get("/v1/agencies", headers=bearer(auditor)).status_code == 200  # seq 10
    return AuditLog(auditor, reader, head=10)


@contextmanager
def tampering(database_url: str) -> Iterator[Connection]:
    """A connection of its own that bypasses the append-only trigger, as a database superuser could.

    PostgreSQL: `session_replication_role = replica` skips ordinary triggers (the append-only ones and the
    foreign keys). SQLite: a plain connection has foreign keys off and there is no trigger to bypass.
    """
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield conn
    finally:
        engine.dispose()


def stored_row(conn: Connection, seq: int) -> dict[str, Any]:
    row = conn.execute(select(EVENTS).where(EVENTS.c.seq == seq)).one()
    return {name: row._mapping[name] for name in EVENT_COLUMNS}


def rehash(conn: Connection, seq: int, prev_hash: str | None = None) -> str:
    """Give event `seq` the hash the rule computes from its columns (optionally relinking it first)."""
    row = stored_row(conn, seq)
    if prev_hash is not None:
        row["prev_hash"] = prev_hash
    new_hash = event_hash(event_document(row))
    conn.execute(update(EVENTS).where(EVENTS.c.seq == seq).values(prev_hash=row["prev_hash"], hash=new_hash))
    return new_hash


def rewrite_from(conn: Connection, first: int, last: int) -> str:
    """Recompute every link and hash from `first` to `last` and move the head row there: a full rewrite."""
    prev: str = stored_row(conn, first - 1)["hash"]
    for seq in range(first, last + 1):
        prev = rehash(conn, seq, prev_hash=prev)
    conn.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=last, hash=prev))
    return prev


def rewind_head(conn: Connection, seq: int) -> None:
    """Point the head row at event `seq`, as someone hiding a cut would."""
    head_hash = stored_row(conn, seq)["hash"]
    conn.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=seq, hash=head_hash))


def remove_events(conn: Connection, seqs: list[int]) -> None:
    conn.execute(delete(AuditEventResource).where(AuditEventResource.seq.in_(seqs)))
    conn.execute(delete(EVENTS).where(EVENTS.c.seq.in_(seqs)))


def forged_row(conn: Connection, seq: int, prev_hash: str, template_seq: int) -> dict[str, Any]:
    """A plausible event at `seq` (copied from another, with a fresh id) whose hash follows the rule."""
    row = stored_row(conn, template_seq)
    row.update(seq=seq, id=f"00000000-0000-4000-8000-{seq:012d}", prev_hash=prev_hash, path="/v1/forged")
    row["hash"] = event_hash(event_document(row))
    return row


def insert_row(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(EVENTS).values(**row))
