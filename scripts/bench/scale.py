"""Scale check (SPEC §11): load N audit events with a valid hash chain and the violation records they
point at, then time the auditor's queries, `sbt audit verify` and filtered pages of records on SQLite and
PostgreSQL.

    make bench-scale                       # 10,000,000 events and 1,000,000 records on each backend
    python scripts/bench/scale.py --events 200000 --backend sqlite --docs none    # a quick check
    python scripts/bench/scale.py --datasets records --backend postgresql        # records only

Each dataset is a loader plus a measurement (`DATASETS`); both draw record ids from one pool (at most
--records, at least a fifth of --events), so "who saw record X" asks about real records.
The databases are throwaway: `var/bench/scale.db` and the PostgreSQL database `sbt_scale` (dropped at
the end unless --keep).
"""
# ruff: noqa: S311, S603, S608 - synthetic data, a tool run as a child, SQL from the schema's own names

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    BIN,
    DEFAULT_PG,
    DOCS,
    command_line,
    create_database,
    drop_database,
    machine_info,
    median,
    percentile,
    postgres_version,
    remove_sqlite,
    service_env,
    write_section,
)
from sqlalchemy import make_url

from app import migrate
from app.audit import service as audit_service
from app.audit.canonical import ROW_FIELDS
from app.audit.chain import outcome_for, row_hash, time_ordered_uuid
from app.audit.models import GENESIS_HASH, AuditEvent
from app.clock import today_jakarta
from app.db import make_engine, make_session_factory
from app.pagination import encode_cursor
from app.violations.demo import CaseFactory
from app.violations.models import Violation
from app.violations.queries import Sort, ViolationFilters, list_records
from app.violations.workflow import FINAL_STATUSES, Status

CHUNK = 20_000
AGENCIES = (("BKN", 34), ("BAWASLU", 26), ("KEMENDAGRI", 20), ("KEMENPANRB", 12), ("KASN", 8))
TOKENS_PER_AGENCY = 8
# (action, weight): reads and lists dominate, as agency systems poll and open records all day.
ACTIONS = (
    ("violation.read", 560), ("violation.list", 250), ("violation.history", 30), ("changes.read", 40),
    ("violation.create", 40), ("violation.update", 25), ("violation.action", 20), ("audit.query", 10),
    ("audit.subject", 3), ("token.list", 2), ("auth.failed", 20),
)
PURPOSES = (
    "pemeriksaan laporan pelanggaran netralitas", "sinkronisasi data antarinstansi",
    "tindak lanjut rekomendasi — PPK", 'audit internal "triwulan III"', "verifikasi NIP\tdan jabatan",
    "permintaan subjek data (UU PDP)",
)
USER_AGENTS = {
    "BKN": "bkn-simpeg-sync/3.2 (python-httpx/0.27)", "BAWASLU": "siwaslu/5.1 (+https://bawaslu.go.id)",
    "KEMENDAGRI": "kemendagri-sipd/1.9 okhttp/4.12", "KEMENPANRB": "menpan-monitor/0.8 curl/8.5",
    "KASN": "kasn-legacy/2.0 Java/17",
}
STATUSES = (200,) * 18 + (404, 403)


# --- shared scenario: agencies, tokens and the pool of record ids ------------------------------------

@dataclass
class Scenario:
    """What every dataset draws from, so datasets agree (the record ids audit events point at)."""

    seed: int
    record_count: int
    rng: random.Random = field(init=False)
    record_ids: list[str] = field(init=False)
    tokens: dict[str, list[str]] = field(init=False)
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    days: int = 365

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        bits = self.rng.getrandbits
        self.record_ids = [str(uuid.UUID(int=bits(128), version=4)) for _ in range(self.record_count)]
        self.tokens = {code: [str(uuid.UUID(int=bits(128), version=4)) for _ in range(TOKENS_PER_AGENCY)]
                       for code, _ in AGENCIES}

    def popular_record(self) -> str:
        """Skewed popularity: a few records are opened far more often than most."""
        return self.record_ids[int(len(self.record_ids) * self.rng.random() ** 3)]


@dataclass
class Target:
    backend: str
    url: str
    data_dir: Path


@dataclass
class Measurement:
    name: str
    value: str
    note: str = ""


@dataclass
class Dataset:
    key: str
    name: str
    load: Callable[[Target, Scenario, argparse.Namespace], dict[str, Any]]
    measure: Callable[[Target, Scenario, argparse.Namespace, dict[str, Any]], list[Measurement]]


# --- audit events -------------------------------------------------------------------------------------

def generate_events(scenario: Scenario, count: int) -> Iterator[tuple[Any, ...]]:
    """Rows in ROW_FIELDS order, as the service loads them (aware datetimes, parsed JSON), chained."""
    rng = scenario.rng
    bits = rng.getrandbits
    choices = rng.choices
    agencies = [code for code, _ in AGENCIES]
    agency_weights = [w for _, w in AGENCIES]
    actions = [a for a, _ in ACTIONS]
    action_weights = [w for _, w in ACTIONS]
    ips = {code: [f"10.{i}.{j}.{k}" for j in range(2) for k in (11, 12)] for i, code in enumerate(agencies)}
    step = timedelta(days=scenario.days) / max(count, 1)
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        agency = choices(agencies, agency_weights)[0]
        action = choices(actions, action_weights)[0]
        status = STATUSES[bits(16) % len(STATUSES)]
        kind = "token"
        token_id: str | None = rng.choice(scenario.tokens[agency])
        actor_agency: str | None = agency
        method, query = "GET", None
        resource_type: str | None = "violation"
        detail: dict[str, Any] = {}
        resource_ids: list[str] = []
        if action == "violation.read":
            record = scenario.popular_record()
            path = f"/v1/violations/{record}"
            resource_ids = [record]
        elif action in ("violation.list", "changes.read"):
            path = "/v1/violations" if action == "violation.list" else "/v1/changes"
            listing = action == "violation.list"
            query = "status=reported&limit=50" if listing else f"after={seq // 3}&limit=100"
            resource_ids = list(dict.fromkeys(scenario.popular_record() for _ in range(bits(5) % 21)))
            if action == "violation.list" and bits(3) == 0:
                detail = {"filters": {"region_code": "32", "status": ["reported", "under_verification"]}}
        elif action == "violation.history":
            record = scenario.popular_record()
            path, resource_ids = f"/v1/violations/{record}/history", [record]
        elif action in ("violation.create", "violation.update", "violation.action"):
            record = scenario.popular_record()
            method = {"violation.create": "POST", "violation.update": "PATCH"}.get(action, "POST")
            path = "/v1/violations" if action == "violation.create" else f"/v1/violations/{record}"
            if action == "violation.action":
                path += "/actions"
                detail = {"action": "start_verification", "from": "reported", "to": "under_verification"}
            elif action == "violation.update":
                detail = {"fields": ["description", "evidence"], "version": 1 + bits(3)}
            status = 201 if action == "violation.create" and status == 200 else status
            resource_ids = [record]
        elif action in ("audit.query", "audit.subject"):
            path, resource_type = "/v1/audit/events", "audit_event"
            query = f"agency={agency}&limit=100"
        elif action == "token.list":
            path, resource_type = "/v1/tokens", "token"
        else:  # auth.failed: a stale or forged token
            path, status, resource_type = "/v1/violations", 401, None
            kind, token_id, actor_agency = "anonymous", None, None
            detail = {"reason": "token unknown, revoked or expired"}
        at = scenario.start + step * seq
        row = (
            seq, time_ordered_uuid(int(at.timestamp() * 1000), bits(80)), at, f"{bits(128):032x}",
            kind, token_id, actor_agency, action, outcome_for(status), status, method, path, query,
            resource_type, resource_ids, ips[agency][bits(2)], USER_AGENTS[agency],
            PURPOSES[bits(8) % len(PURPOSES)] if bits(2) == 0 else None, detail, prev,
        )
        prev = row_hash(row)
        yield (*row, prev)


def _link_rows(rows: list[tuple[Any, ...]]) -> list[tuple[str, int]]:
    ids = ROW_FIELDS.index("resource_ids")
    return [(rid, row[0]) for row in rows for rid in dict.fromkeys(row[ids])]


def load_audit_events(target: Target, scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    events = generate_events(scenario, args.events)
    if target.backend == "sqlite":
        last_seq, last_hash = _load_sqlite(target.url, events)
    else:
        last_seq, last_hash = _load_postgres(target.url, events)
    seconds = time.perf_counter() - started
    print(f"  loaded {last_seq:,} audit events in {seconds:.1f} s ({last_seq / seconds:,.0f}/s)", flush=True)
    return {"rows": last_seq, "events": last_seq, "head_hash": last_hash, "load_seconds": seconds}


def _chunks(events: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in events:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_sqlite(url: str, events: Iterator[tuple[Any, ...]]) -> tuple[int, str]:
    """Chunked executemany through the service's own column types; secondary indexes built at the end."""
    engine = make_engine(url, sqlite_synchronous="OFF", pool_size=1)
    dialect = engine.dialect
    table = AuditEvent.__table__.columns
    processors = [table[f].type.dialect_impl(dialect).bind_processor(dialect) for f in ROW_FIELDS]
    last_seq, last_hash = 0, GENESIS_HASH
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        db.execute("PRAGMA cache_size=-1048576")  # 1 GiB: the unique id index is written in random order
        indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                             "AND tbl_name IN ('audit_events', 'audit_event_resources')").fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        columns = ", ".join(ROW_FIELDS)
        insert_events = f"INSERT INTO audit_events ({columns}) VALUES ({', '.join('?' * len(ROW_FIELDS))})"
        for chunk in _chunks(events):
            stored = [tuple(v if p is None else p(v) for p, v in zip(processors, row, strict=True))
                      for row in chunk]
            db.execute("BEGIN")
            db.executemany(insert_events, stored)
            db.executemany("INSERT INTO audit_event_resources (resource_id, seq) VALUES (?, ?)",
                           _link_rows(chunk))
            db.execute("COMMIT")
            last_seq, last_hash = chunk[-1][0], chunk[-1][-1]
        for _, sql in indexes:
            db.execute(sql)
        db.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (last_seq, last_hash))
    finally:
        raw.close()
        engine.dispose()
    return last_seq, last_hash


def _load_postgres(url: str, events: Iterator[tuple[Any, ...]]) -> tuple[int, str]:
    """COPY, with the indexes and constraints that are not needed for loading rebuilt afterwards from
    their own definitions (so the schema ends exactly as the migration left it)."""
    engine = make_engine(url, pool_size=1)
    json_columns = {ROW_FIELDS.index("resource_ids"), ROW_FIELDS.index("detail")}
    last_seq, last_hash = 0, GENESIS_HASH
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        tables = "('audit_events'::regclass, 'audit_event_resources'::regclass)"
        constraints = db.execute(
            f"SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE conrelid IN {tables} AND contype IN ('u', 'f', 'p') "
            f"AND NOT (conrelid = 'audit_events'::regclass AND contype = 'p') "
            f"ORDER BY contype = 'f'").fetchall()
        owned = {name for _, name, _ in constraints}
        indexes = [(name, sql) for name, sql in db.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('audit_events', "
            "'audit_event_resources') AND indexname NOT IN (SELECT conname FROM pg_constraint)").fetchall()]
        for table, name, _ in reversed(constraints):
            db.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        db.commit()
        columns = ", ".join(ROW_FIELDS)
        with db.cursor() as cur:
            for chunk in _chunks(events):
                with cur.copy(f"COPY audit_events ({columns}) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row([json.dumps(v) if i in json_columns else v for i, v in enumerate(row)])
                with cur.copy("COPY audit_event_resources (resource_id, seq) FROM STDIN") as copy:
                    for link in _link_rows(chunk):
                        copy.write_row(link)
                db.commit()
                last_seq, last_hash = chunk[-1][0], chunk[-1][-1]
            for _, sql in indexes:
                cur.execute(sql)
            for table, name, definition in constraints:
                assert name not in {n for n, _ in indexes} and name in owned
                cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            cur.execute("UPDATE chain_head SET seq = %s, hash = %s WHERE id = 1", (last_seq, last_hash))
            db.commit()
            # A live database has had autovacuum analyse these tables; a bulk load has not.
            db.autocommit = True
            cur.execute("ANALYZE audit_events")
            cur.execute("ANALYZE audit_event_resources")
    finally:
        raw.close()
        engine.dispose()
    return last_seq, last_hash


def kept_audit_events(target: Target) -> dict[str, Any]:
    """The audit events of a database kept by an earlier run (`--reuse`): measured again, not loaded."""
    events = _head_seq(target)
    print(f"  kept {events:,} audit events", flush=True)
    return {"rows": events, "events": events, "load_seconds": None}


def measure_audit_events(target: Target, scenario: Scenario, args: argparse.Namespace,
                         loaded: dict[str, Any]) -> list[Measurement]:
    results = _audit_queries(target, scenario, args)
    if args.throughput_seconds > 0:
        try:
            results += _throughput(target, args)
        except RuntimeError as exc:  # run.BenchError: an invalid run is reported, the other results kept
            results.append(Measurement("audited throughput, loaded log / empty log", "invalid run", str(exc)))
    # Last, so that it also checks the events the service appended to the loaded chain.
    results.append(_verify(target, loaded["events"] + _appended(target, loaded["events"])))
    return results


def _appended(target: Target, loaded: int) -> int:
    return _head_seq(target) - loaded


def _head_seq(target: Target) -> int:
    """The seq of the chain's last event."""
    engine = make_engine(target.url, pool_size=1)
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT seq FROM chain_head").scalar_one())
    finally:
        engine.dispose()


THROUGHPUT_PORTS = {"full": 18220, "empty": 18221}


def _throughput(target: Target, args: argparse.Namespace) -> list[Measurement]:
    """Audited request throughput on the loaded log against an empty one (SPEC §11: within 10 %).

    Each database is served as `make bench` serves one (`sbt serve`, one worker on one core, wrk
    closed-loop on the other, 32 connections), one server at a time and started afresh for each turn;
    the audited read A2 and the audited write B1, alternating between the two logs for
    `--throughput-rounds` rounds, the median counts. Every request appends to
    the log under test, so the loaded one's indexes (10 M rows) are maintained on every request.
    """
    import run as bench  # scripts/bench/run.py: the same servers, wrk scripts and validity rules

    server_core, load_core = bench.pinned_cores()
    wrk = bench.ensure_tools()
    workdir = target.data_dir / "throughput"
    workdir.mkdir(parents=True, exist_ok=True)
    empty_url = fresh_database(target.backend, args, workdir, "scale_empty")
    backends: dict[str, Any] = {}
    peaks: dict[tuple[str, str], list[float]] = {(g, n): [] for g in ("A2", "B1") for n in ("full", "empty")}
    options = argparse.Namespace(connections=32)
    try:
        for name, url in (("full", target.url), ("empty", empty_url)):
            backend = bench.Backend(target.backend, url, workdir / name, THROUGHPUT_PORTS[name])
            backend.data_dir.mkdir(exist_ok=True)
            backend.env = service_env(url, backend.data_dir, rate_limit=bench.UNLIMITED,
                                      auth_failure_limit=bench.UNLIMITED, checkpoint_interval_seconds="0")
            bench.sbt(backend, "keys", "generate")
            backend.token = bench.sbt(backend, "tokens", "create", "--agency", "BAWASLU", "--name", "scale",
                                      "--scope", "violations:read", "--scope", "violations:write")
            backends[name] = backend
        # One server at a time, started afresh for each turn: two at once would hold two processes' pools
        # (up to 80 PostgreSQL connections each with the default pool sizes; this server allows 100).
        for round_ in range(1, args.throughput_rounds + 1):
            for name, backend in backends.items():
                servers = bench.Servers(server_core, workdir)
                try:
                    command = [str(BIN / "sbt"), "serve", "--port", str(backend.port)]
                    servers.start(f"{name}-{round_}", command, backend.env,
                                  f"http://127.0.0.1:{backend.port}/readyz")
                    served, _ = bench.service_arms(backend)
                    arms = [arm for arm in served if arm.group in ("A2", "B1")]
                    for arm in arms:
                        arm.name = f"{arm.group} {name}"
                        bench.preflight(arm)
                        bench.peak(arm, wrk, load_core, workdir, options, 2.0)  # warm-up
                    for arm in arms:
                        rate = bench.peak(arm, wrk, load_core, workdir, options, args.throughput_seconds)
                        peaks[(arm.group, name)].append(rate)
                        print(f"  throughput round {round_}: {arm.name:<8} {rate:>8,.0f} req/s", flush=True)
                finally:
                    servers.stop()
    finally:
        discard_database(target.backend, args, empty_url)
    results = []
    for group, what in (("A2", "GET /v1/violations/{id}"), ("B1", "POST /v1/violations")):
        full, empty = peaks[(group, "full")], peaks[(group, "empty")]
        ratio = median(full) / median(empty)
        runs_full = ", ".join(f"{x:,.0f}" for x in full)
        runs_empty = ", ".join(f"{x:,.0f}" for x in empty)
        results.append(Measurement(
            f"audited throughput, {group} {what}, loaded log / empty log",
            f"{ratio:.2f} ({median(full):,.0f} / {median(empty):,.0f} req/s)",
            f"medians of {args.throughput_rounds} runs of {args.throughput_seconds:g} s, alternating, "
            f"a fresh server each; loaded {runs_full}, empty {runs_empty}; "
            f"{'within' if ratio >= 0.9 else 'NOT within'} 10 %"))
    return results


WINDOWS = (("1 hour", timedelta(hours=1)), ("1 day", timedelta(days=1)), ("30 days", timedelta(days=30)))


def _audit_queries(target: Target, scenario: Scenario, args: argparse.Namespace) -> list[Measurement]:
    """p50/p99 of the two auditor questions, through the service function and through the API."""
    rng = random.Random(args.seed + 1)
    span = timedelta(days=scenario.days)
    agencies = [code for code, _ in AGENCIES]

    def window_query(width: timedelta) -> dict[str, Any]:
        since = scenario.start + (span - width) * rng.random()
        return {"agency": rng.choice(agencies), "since": since, "until": since + width}

    plans: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (f"agency + {label} page of 100", functools.partial(window_query, width)) for label, width in WINDOWS
    ]
    plans.append(("who saw record X (resource_id), page of 100",
                  lambda: {"resource_id": scenario.popular_record() if rng.random() < 0.5
                           else rng.choice(scenario.record_ids)}))
    results = []
    if args.via in ("service", "both"):
        engine = make_engine(target.url, pool_size=1)
        sessions = make_session_factory(engine)
        try:
            for label, plan in plans:
                timings = []
                with sessions() as session:
                    for i in range(args.queries + 10):
                        filters = plan()
                        started = time.perf_counter()
                        audit_service.list_events(session=session, limit=100, cursor=None, **filters)
                        if i >= 10:  # the first few warm the caches
                            timings.append((time.perf_counter() - started) * 1000)
                        session.rollback()
                results.append(_latency(f"{label} — service function", timings))
        finally:
            engine.dispose()
    if args.via in ("api", "both"):
        results += _api_queries(target, plans, args)
    return results


def _api_queries(target: Target, plans: list[tuple[str, Callable[[], dict[str, Any]]]],
                 args: argparse.Namespace) -> list[Measurement]:
    """In-process through the ASGI app (TestClient): token check, query, response model, audit commit."""
    from fastapi.testclient import TestClient

    from app.auth.keys import generate_key_file
    from app.cli import issue_token_offline
    from app.config import Settings
    from app.main import create_app
    from app.tokens.schemas import TokenCreate

    key = target.data_dir / "signing-key.pem"
    generate_key_file(key, "ES256")
    settings = Settings(database_url=target.url, signing_key_file=key, data_dir=target.data_dir,
                        rate_limit="1000000/second", checkpoint_interval_seconds=0)
    engine = make_engine(target.url, pool_size=1)
    with make_session_factory(engine)() as session:
        _, token = issue_token_offline(settings, session, TokenCreate(
            agency="BKN", name="scale auditor", scopes=["audit:read"], expires_in_days=1))
    engine.dispose()
    headers = {"Authorization": f"Bearer {token}"}
    results = []
    # The service's JSON log lines, formatted as always, into a file rather than over the report.
    from app.logs import JsonFormatter

    log = logging.getLogger("sbt")
    handler = logging.FileHandler(target.data_dir / "api-queries.log")
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    with TestClient(create_app(settings)) as client:
        for label, plan in plans:
            timings = []
            for i in range(args.queries + 10):
                params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in plan().items()}
                started = time.perf_counter()
                response = client.get("/v1/audit/events", params={**params, "limit": 100}, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"API query failed: {response.status_code} {response.text[:300]}")
                if i >= 10:
                    timings.append(elapsed)
            results.append(_latency(f"{label} — API (GET /v1/audit/events)", timings))
    log.removeHandler(handler)
    handler.close()
    return results


def _latency(label: str, timings: list[float]) -> Measurement:
    return Measurement(label, f"p50 {percentile(timings, 50):.2f} ms, p99 {percentile(timings, 99):.2f} ms",
                       f"{len(timings)} queries")


def _verify(target: Target, events: int) -> Measurement:
    """`sbt audit verify` as a user runs it: a process of its own; wall time, its peak RSS and the largest
    peak RSS among it and the helpers it starts for a long log."""
    env = service_env(target.url, target.data_dir)
    # Started through a small parent: a child forked straight from this (large) process would report
    # this process's memory as its own peak RSS.
    probe = ("import json, os, resource, subprocess, sys, time; t = time.perf_counter(); "
             "p = subprocess.Popen(sys.argv[1:]); _, s, u = os.wait4(p.pid, 0); "
             "largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
             "print(json.dumps({'code': os.waitstatus_to_exitcode(s), 'largest_kb': largest, "
             "'seconds': time.perf_counter() - t, 'rss_kb': u.ru_maxrss}), file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", probe, str(BIN / "sbt"), "audit", "verify"], env=env,
                         capture_output=True, text=True, check=False)
    stats = json.loads(run.stderr.strip().splitlines()[-1])
    seconds, rss_mb, largest_mb = stats["seconds"], stats["rss_kb"] / 1024, stats["largest_kb"] / 1024
    if stats["code"] != 0:
        raise SystemExit(f"sbt audit verify failed ({stats['code']}): {run.stdout} {run.stderr}")
    stderr = run.stderr
    checked = int(stderr.split("ok: ", 1)[1].split()[0]) if "ok: " in stderr else events
    # The command's own start-up (importing the CLI), the same for any log: `--help` imports it and exits.
    started = time.perf_counter()
    subprocess.run([str(BIN / "sbt"), "audit", "verify", "--help"], env=env, capture_output=True, check=True)
    startup = time.perf_counter() - started
    return Measurement("sbt audit verify", f"{checked / seconds:,.0f} events/s",
                       f"{checked:,} events in {seconds:.1f} s (whole process; its start-up alone takes "
                       f"{startup:.1f} s, {checked / max(seconds - startup, 1e-9):,.0f} events/s after it); "
                       f"peak RSS {rss_mb:.0f} MB, largest helper process {largest_mb:.0f} MB")


# --- violation records --------------------------------------------------------------------------------

RECORD_COLUMNS = tuple(c.name for c in Violation.__table__.columns)
# A record's version once it has reached a status (the workflow's steps to get there, plus creation).
VERSIONS = {Status.REPORTED: 1, Status.UNDER_VERIFICATION: 2, Status.RECOMMENDED: 3, Status.DATA_BLOCKED: 3,
            Status.NOT_PROVEN: 3, Status.REJECTED: 2, Status.CANCELLED: 2, Status.SANCTIONED: 4,
            Status.SUBJECT_DEPARTED: 4}
ANCHORS = 2000  # records kept aside (reservoir sample) as the positions that deep pages start after


def generate_records(scenario: Scenario, anchors: list[tuple[datetime, str]]) -> Iterator[dict[str, Any]]:
    """One row per record id of the pool (so audit events point at real records), with the content the
    demo data draws (app/violations/demo.py: subjects, categories, stages, statuses, reporters), created
    and last updated over the scenario's year; a reservoir sample of (updated_at, id) goes to `anchors`."""
    rng = random.Random(scenario.seed + 2)
    factory = CaseFactory(rng, date(2025, 12, 31))
    span = scenario.days * 86_400
    for number, record_id in enumerate(scenario.record_ids, start=1):
        case = factory.case()
        body, status = case.body, case.status
        created = scenario.start + timedelta(seconds=rng.random() * span)
        left = scenario.start.timestamp() + span - created.timestamp()  # seconds until the year ends
        updated = created if status is Status.REPORTED else created + timedelta(seconds=rng.random() * left)
        recommended = status in (Status.RECOMMENDED, Status.SANCTIONED, Status.SUBJECT_DEPARTED)
        subject = body["subject"]
        row = {
            "id": uuid.UUID(record_id), "case_number": f"NET-2025-{number:07d}", "status": status.value,
            "version": VERSIONS[status], "reporting_agency": case.reporter,
            **{f"subject_{k}": v for k, v in subject.items()},
            "election_type": body["election"]["type"], "election_year": body["election"]["year"],
            "election_stage": body["election"]["stage"], "category": body["category"],
            "description": body["description"], "occurred_on": date.fromisoformat(body["occurred_on"]),
            "source": body["source"], "evidence": body["evidence"],
            "recommendation": {"sanction": "discipline_light", "number": f"{number % 900 + 100}/R/KN.01/2025",
                               "issued_on": updated.date().isoformat()} if recommended else None,
            "follow_up": {"decision_number": f"800/{number}/2025", "decided_on": updated.date().isoformat()}
            if status in FINAL_STATUSES and recommended else None,
            "follow_up_due_on": updated.date() + timedelta(days=14) if status is Status.RECOMMENDED else None,
            "created_at": created, "updated_at": updated,
        }
        if len(anchors) < ANCHORS:
            anchors.append((updated, record_id))
        elif (slot := rng.randrange(number)) < ANCHORS:
            anchors[slot] = (updated, record_id)
        yield row


def load_records(target: Target, scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    anchors: list[tuple[datetime, str]] = []
    rows = generate_records(scenario, anchors)
    count = _load_records_sqlite(target.url, rows) if target.backend == "sqlite" else \
        _load_records_postgres(target.url, rows)
    seconds = time.perf_counter() - started
    print(f"  loaded {count:,} violation records in {seconds:.1f} s ({count / seconds:,.0f}/s)", flush=True)
    return {"rows": count, "load_seconds": seconds, "anchors": anchors}


def _record_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_records_sqlite(url: str, rows: Iterator[dict[str, Any]]) -> int:
    engine = make_engine(url, sqlite_synchronous="OFF", pool_size=1)
    dialect = engine.dialect
    columns = Violation.__table__.columns
    processors = [columns[c].type.dialect_impl(dialect).bind_processor(dialect) for c in RECORD_COLUMNS]
    marks = ", ".join("?" * len(RECORD_COLUMNS))
    insert = f"INSERT INTO violations ({', '.join(RECORD_COLUMNS)}) VALUES ({marks})"
    count = 0
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        db.execute("PRAGMA cache_size=-1048576")
        db.execute("PRAGMA foreign_keys=OFF")  # agencies are seeded; the loader writes only known codes
        indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                             "AND tbl_name = 'violations'").fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        for chunk in _record_chunks(rows):
            db.execute("BEGIN")
            db.executemany(insert, [tuple(row[c] if p is None else p(row[c])
                                          for c, p in zip(RECORD_COLUMNS, processors, strict=True))
                                    for row in chunk])
            db.execute("COMMIT")
            count += len(chunk)
        for _, sql in indexes:
            db.execute(sql)
        db.execute("ANALYZE violations")
    finally:
        raw.close()
        engine.dispose()
    return count


def _load_records_postgres(url: str, rows: Iterator[dict[str, Any]]) -> int:
    engine = make_engine(url, pool_size=1)
    json_columns = {"evidence", "recommendation", "follow_up"}
    count = 0
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        indexes = db.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'violations' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)").fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        db.commit()
        with db.cursor() as cur:
            for chunk in _record_chunks(rows):
                with cur.copy(f"COPY violations ({', '.join(RECORD_COLUMNS)}) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row([None if row[c] is None else json.dumps(row[c]) if c in json_columns
                                        else row[c] for c in RECORD_COLUMNS])
                db.commit()
                count += len(chunk)
            for _, sql in indexes:
                cur.execute(sql)
            db.commit()
            db.autocommit = True
            cur.execute("ANALYZE violations")
    finally:
        raw.close()
        engine.dispose()
    return count


def measure_records(target: Target, scenario: Scenario, args: argparse.Namespace,
                    loaded: dict[str, Any]) -> list[Measurement]:
    """p50/p99 of a filtered page of 50 (`app.violations.queries.list_records`, what GET /v1/violations
    runs) after a cursor at a random depth: the position of a random record in the sort order, which a
    client reaches by walking pages; one query in five is the first page."""
    rng = random.Random(args.seed + 3)
    anchors: list[tuple[datetime, str]] = loaded["anchors"]
    provinces = sorted({code.split(".")[0] for code in _region_codes(target)})
    plans: list[tuple[str, Callable[[], ViolationFilters]]] = [
        ("no filter", ViolationFilters),
        ("status", lambda: ViolationFilters(statuses=(rng.choice(list(Status)).value,))),
        ("agency + two statuses", lambda: ViolationFilters(
            reporting_agency=rng.choice(["BAWASLU", "BKN"]), statuses=("reported", "under_verification"))),
        ("category", lambda: ViolationFilters(category=rng.choice(_CATEGORIES))),
        ("province (region code and every code under it)",
         lambda: ViolationFilters(region_code=rng.choice(provinces))),
        ("election type + year", lambda: ViolationFilters(election_type="pilkada", election_year=2024)),
        ("text search q (name, institution, description)",
         lambda: ViolationFilters(q=rng.choice(["Siti", "Kabupaten Bogor", "spanduk", "Wahyu"]))),
    ]
    engine = make_engine(target.url, pool_size=1)
    sessions = make_session_factory(engine)
    today = today_jakarta()
    results = []
    try:
        for label, plan in plans:
            timings = []
            with sessions() as session:
                for i in range(args.queries + 10):
                    sort = Sort.UPDATED_DESC if rng.random() < 0.8 else Sort.CREATED_DESC
                    cursor = None
                    if rng.random() < 0.8:
                        at, record_id = rng.choice(anchors)
                        if sort is Sort.CREATED_DESC:
                            created = session.scalar(Violation.__table__.select().with_only_columns(
                                Violation.__table__.c.created_at).where(
                                Violation.__table__.c.id == uuid.UUID(record_id)))
                            assert created is not None, record_id
                            at = created
                        cursor = encode_cursor(sort.value, at.isoformat(), record_id)
                    filters = plan()
                    started = time.perf_counter()
                    list_records(session=session, filters=filters, sort=sort, limit=50, cursor=cursor,
                                 today=today)
                    if i >= 10:
                        timings.append((time.perf_counter() - started) * 1000)
                    session.rollback()
            results.append(_latency(f"page of 50 records, {label} — service function", timings))
    finally:
        engine.dispose()
    return results


_CATEGORIES = ["online_campaigning", "social_media_engagement", "campaign_attendance", "partisan_photo",
               "other"]


def _region_codes(target: Target) -> list[str]:
    engine = make_engine(target.url, pool_size=1)
    try:
        with engine.connect() as connection:
            return [r[0] for r in connection.exec_driver_sql(
                "SELECT DISTINCT subject_region_code FROM violations").fetchall()]
    finally:
        engine.dispose()


DATASETS = [Dataset("audit", "audit events", load_audit_events, measure_audit_events),
            Dataset("records", "violation records", load_records, measure_records)]


# --- driver -------------------------------------------------------------------------------------------

def fresh_database(backend: str, args: argparse.Namespace, data_dir: Path, name: str) -> str:
    """A new, migrated throwaway database: `data_dir/<name>.db`, or `sbt_<name>` on the --postgres server."""
    if backend == "sqlite":
        path = data_dir / f"{name}.db"
        remove_sqlite(path)
        url = f"sqlite:///{path}"
    else:
        url = create_database(args.postgres, f"sbt_{name}")
    migrate.upgrade(url)
    return url


def discard_database(backend: str, args: argparse.Namespace, url: str) -> None:
    if backend == "sqlite":
        remove_sqlite(Path(url.split(":///", 1)[1]))
    else:
        drop_database(args.postgres, str(make_url(url).database))


def prepare(backend: str, args: argparse.Namespace) -> Target:
    data_dir = BENCH_DIR / f"scale-{backend}"
    if args.reuse:
        if backend == "sqlite":
            path = data_dir / "scale.db"
            if not path.exists():
                raise SystemExit(f"--reuse: no kept database at {path}")
            url = f"sqlite:///{path}"
        else:
            url = make_url(args.postgres).set(database="sbt_scale").render_as_string(hide_password=False)
        migrate.upgrade(url)  # kept before a later migration: measured on today's schema
        return Target(backend, url, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return Target(backend, fresh_database(backend, args, data_dir, "scale"), data_dir)


def cleanup(target: Target, args: argparse.Namespace) -> None:
    if args.keep:
        print(f"  kept {target.url}")
        return
    discard_database(target.backend, args, target.url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--records", type=int, default=1_000_000, help="size of the record id pool")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres", default=os.environ.get("SBT_BENCH_POSTGRES", DEFAULT_PG),
                        help="server for the throwaway database sbt_scale")
    parser.add_argument("--queries", type=int, default=300, help="timed queries per kind")
    parser.add_argument("--via", choices=["service", "api", "both"], default="both")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--datasets", default="audit,records",
                        help="comma-separated: audit (audit events), records (violation records)")
    parser.add_argument("--docs", default=str(DOCS), help="markdown file for the results, or 'none'")
    parser.add_argument("--throughput-seconds", type=float, default=10,
                        help="seconds per run of the loaded-vs-empty throughput check (0 skips it)")
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--reuse", action="store_true",
                        help="measure the audit events of the database an earlier --keep run left (same "
                             "--events and --seed), instead of loading them again; implies --keep")
    args = parser.parse_args()
    if args.reuse:
        if args.datasets != "audit":
            parser.error("--reuse measures the audit dataset only: add --datasets audit")
        args.keep = True

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    info = machine_info()
    report: list[str] = []
    for backend in backends:
        scenario = Scenario(seed=args.seed, record_count=min(args.records, max(1000, args.events // 5)))
        print(f"{backend}: preparing", flush=True)
        target = prepare(backend, args)
        try:
            version = f"SQLite {info['sqlite']}" if backend == "sqlite" else \
                f"PostgreSQL {postgres_version(target.url)}"
            report += [f"### {version}", "", "| measurement | result | notes |", "|---|---|---|"]
            for dataset in DATASETS:
                if dataset.key not in args.datasets.split(","):
                    continue
                if args.reuse:
                    loaded = kept_audit_events(target)
                    report.append(f"| kept {dataset.name} | {loaded['rows']:,} rows | loaded by an earlier "
                                  "run with --keep |")
                else:
                    print(f"{backend}: loading {dataset.name}", flush=True)
                    loaded = dataset.load(target, scenario, args)
                    report.append(f"| load {dataset.name} | {loaded['rows']:,} rows | "
                                  f"{loaded['load_seconds']:.0f} s |")
                for m in dataset.measure(target, scenario, args, loaded):
                    print(f"  {m.name}: {m.value} ({m.note})", flush=True)
                    report.append(f"| {m.name} | {m.value} | {m.note} |")
            report.append("")
        finally:
            cleanup(target, args)
    body = "\n".join([
        f"Command: `{command_line()}` — {args.events:,} audit events, record id pool "
        f"{min(args.records, max(1000, args.events // 5)):,}, {args.queries} timed queries per kind.",
        "",
        f"Machine: {info['nproc']} cores, {info['cpu']}, Linux {info['kernel']}, Python {info['python']}.",
        "",
        "Events are spread evenly over a year across the five agencies (BKN 34 %, Bawaslu 26 %, Kemendagri "
        "20 %, KemenPAN-RB 12 %, KASN 8 %); 56 % `violation.read`, 25 % `violation.list` (0 to 20 ids each), "
        "the rest writes, history, change feed, audit queries and failed authentications; record ids are "
        "drawn with skewed popularity from the pool. The loader computes the chain with the service's hash "
        "rule; `sbt audit verify` then checks all of it. Query timings: the service function "
        "(`app.audit.service.list_events`, database and event documents) and the API in-process "
        "(TestClient: token check, query, response model and the audited commit of the query itself). "
        "Verify: wall time of the whole `sbt audit verify` process, its peak RSS and that of the largest of "
        "its helper processes (app/audit/stream.py, app/audit/rowcheck.py). Records: one per id of the pool, "
        "drawn as the demo data is (app/violations/demo.py: Bawaslu reports nine in ten, statuses across the "
        "workflow, subjects over every province), created and updated over the year; only the `violations` "
        "table (a page reads nothing else). A page of 50 is timed through "
        "`app.violations.queries.list_records` (what GET /v1/violations runs), four in five after a cursor "
        "at the position of a random record, so at any depth.",
        "",
        *report,
    ])
    print(body)
    if args.docs != "none":
        write_section(Path(args.docs), "Scale", body)
        print(f"wrote the Scale section of {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
