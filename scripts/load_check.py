"""Load check (not part of `make test`): concurrent clients against a real `sbt serve`, then proof that
nothing was lost or left unaudited.

    .venv/bin/python scripts/load_check.py [--clients 50] [--seconds 60] [--database-url URL]

It migrates a fresh database (a SQLite file in a temporary directory, or a new database on the
PostgreSQL server that --database-url names, dropped afterwards), issues tokens, starts `sbt serve` on a
free port in 18100-18199 and runs a realistic mix: record reads, lists, creates, JSON-merge-patches and
workflow actions with If-Match, the change feed, the agency roster. Then it checks, from the database:
  1. no 5xx and no transport error;
  2. every write acknowledged with 2xx is stored (each record and version it reported);
  3. audit events written == requests sent (every request, whatever its status, has one event);
  4. the audit chain verifies.
It prints a report (--markdown: as a section for docs/benchmarks.md) and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from app import migrate
from app.audit import service as audit_service
from app.audit.models import AuditEvent
from app.auth.keys import generate_key_file
from app.cli import issue_token_offline
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.tokens.schemas import TokenCreate
from app.violations.models import ViolationVersion

PORTS = range(18100, 18200)
ALL_SCOPES = ["violations:read", "violations:write", "audit:read", "admin"]
# The same valid sample case the benchmark posts.
RECORD = json.loads((Path(__file__).resolve().parent / "bench" / "violation.json").read_text())
# (operation, weight): a day of agency systems syncing and officers working cases.
MIX = [("read", 30), ("list", 15), ("create", 15), ("patch", 10), ("action", 10), ("feed", 15),
       ("agencies", 5)]
SEED_RECORDS = 20


@dataclass
class Tally:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    transport_errors: list[str] = field(default_factory=list)
    server_errors: list[tuple[str, int, str]] = field(default_factory=list)
    # (record id, version) of every write the server acknowledged with 2xx
    acknowledged: list[tuple[str, int]] = field(default_factory=list)


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port in 18100-18199")


class Database:
    """A fresh database for the run: a SQLite file, or a new database on a PostgreSQL server."""

    def __init__(self, base_url: str | None, workdir: Path) -> None:
        self.admin_url: str | None = None
        if base_url and base_url.startswith("postgresql"):
            self.name = f"sbt_load_{uuid.uuid4().hex[:8]}"
            self.admin_url = make_url(base_url).set(database="postgres").render_as_string(hide_password=False)
            self.url = make_url(base_url).set(database=self.name).render_as_string(hide_password=False)
            self._admin(f'CREATE DATABASE "{self.name}"')
        else:
            self.url = f"sqlite:///{workdir / 'sbt.db'}"
        migrate.upgrade(self.url)

    def _admin(self, sql: str) -> None:
        assert self.admin_url is not None
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(sql))
        engine.dispose()

    def drop(self) -> None:
        if self.admin_url is not None:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def server_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBT_")}
    env.update({"SBT_DATABASE_URL": settings.database_url, "SBT_SIGNING_KEY_FILE": str(settings.key_file),
                "SBT_DATA_DIR": str(settings.data_dir), "SBT_ENV": "test",
                # The load is one client process; per-token limits are not what is being checked.
                "SBT_RATE_LIMIT": "100000000/minute", "SBT_AUTH_FAILURE_LIMIT": "100000000/minute"})
    return env


def start_server(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    sbt = Path(sys.executable).with_name("sbt")
    command = [str(sbt)] if sbt.exists() else [sys.executable, "-m", "app.cli"]
    with log.open("ab") as out:
        process = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port)],  # noqa: S603
                                   env=server_env(settings), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"sbt serve exited early; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("sbt serve did not become healthy within 60 s")


class Client:
    """One simulated agency system: its own connection, token and change-feed position."""

    def __init__(self, http: httpx.AsyncClient, token: str, tally: Tally, records: list[str]) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.tally = tally
        self.records = records
        self.after = 0

    async def call(self, op: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        started = time.perf_counter()
        self.tally.requests += 1
        try:
            response = await self.http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            self.tally.transport_errors.append(f"{method} {url}: {type(exc).__name__}")
            return None
        self.tally.latencies[op].append(time.perf_counter() - started)
        self.tally.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.tally.server_errors.append((f"{method} {url}", response.status_code, response.text[:200]))
        return response

    def written(self, response: httpx.Response | None) -> None:
        if response is not None and 200 <= response.status_code < 300:
            document = response.json()
            self.tally.acknowledged.append((document["id"], int(document["version"])))
            if response.status_code == 201:
                self.records.append(document["id"])

    async def step(self, op: str) -> None:
        record = random.choice(self.records)  # noqa: S311 (a load mix, not a secret)
        if op == "read":
            await self.call(op, "GET", f"/v1/violations/{record}")
        elif op == "list":
            status = random.choice(["", "&status=reported", "&status=under_verification"])  # noqa: S311
            await self.call(op, "GET", f"/v1/violations?limit=20{status}")
        elif op == "create":
            self.written(await self.call(op, "POST", "/v1/violations", json=RECORD))
        elif op in ("patch", "action"):
            current = await self.call("read", "GET", f"/v1/violations/{record}")
            if current is None or current.status_code != 200:
                return
            if_match = {"If-Match": current.headers["etag"]}
            if op == "patch":
                change = {"description": f"Diperbarui oleh pemeriksa {uuid.uuid4().hex[:8]}."}
                patch = {**if_match, "Content-Type": "application/merge-patch+json"}
                url = f"/v1/violations/{record}"
                response = await self.call(op, "PATCH", url, json=change, headers=patch)
            else:
                response = await self.call(op, "POST", f"/v1/violations/{record}/actions",
                                           json={"action": "start_verification"}, headers=if_match)
            self.written(response)
        elif op == "feed":
            response = await self.call(op, "GET", f"/v1/changes?after={self.after}&limit=100")
            if response is not None and response.status_code == 200:
                self.after = response.json()["next_after"]
        else:
            await self.call(op, "GET", "/v1/agencies")


async def run_load(base_url: str, tokens: list[str], clients: int, seconds: float, tally: Tally) -> float:
    records: list[str] = []
    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        seeder = Client(http, tokens[0], tally, records)
        for _ in range(SEED_RECORDS):
            seeder.written(await seeder.call("create", "POST", "/v1/violations", json=RECORD))
        if not records:
            raise SystemExit("could not create the seed records; see the server log")
        ops, weights = zip(*MIX, strict=True)
        deadline = time.monotonic() + seconds

        async def simulate(index: int) -> None:
            client = Client(http, tokens[index % len(tokens)], tally, records)
            while time.monotonic() < deadline:
                await client.step(random.choices(ops, weights)[0])  # noqa: S311

        started = time.monotonic()
        await asyncio.gather(*(simulate(i) for i in range(clients)))
        return time.monotonic() - started


def check(settings: Settings, tally: Tally, events_before: int) -> list[tuple[str, bool, str]]:
    engine = make_engine(settings.database_url, pool_size=1)
    with make_session_factory(engine)() as session:
        events = int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0) - events_before
        stored = {(str(v), n) for v, n in session.execute(select(ViolationVersion.violation_id,
                                                                 ViolationVersion.version))}
        missing = [w for w in tally.acknowledged if w not in stored]
        chain = audit_service.verify(session)
    engine.dispose()
    five_xx = sum(n for status, n in tally.statuses.items() if status >= 500)
    return [
        ("no 5xx, no transport errors", five_xx == 0 and not tally.transport_errors,
         f"{five_xx} 5xx, {len(tally.transport_errors)} transport errors"
         + (f": {'; '.join(tally.transport_errors[:5])}" if tally.transport_errors else "")),
        ("every acknowledged write is stored", not missing,
         f"{len(tally.acknowledged)} acknowledged, {len(missing)} missing"),
        ("audit events == requests", events == tally.requests,
         f"{events} events for {tally.requests} requests"),
        ("audit chain verifies", chain.ok, f"{chain.checked} events checked, head seq {chain.head_seq}"),
    ]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(args: argparse.Namespace, backend: str, elapsed: float, tally: Tally,
           results: list[tuple[str, bool, str]]) -> str:
    lines = []
    if args.markdown:
        lines += [f"### {backend}, {args.clients} clients, {args.seconds:g} s "
                  f"({time.strftime('%Y-%m-%d')}, `scripts/load_check.py`)", "",
                  "| operation | requests | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|"]
    else:
        lines.append(f"{backend}: {args.clients} clients for {elapsed:.1f} s")
    for op, _ in MIX:
        values = tally.latencies.get(op, [])
        if not values:
            continue
        p50, p95, p99 = (percentile(values, q) * 1000 for q in (50, 95, 99))
        lines.append(f"| {op} | {len(values)} | {p50:.1f} | {p95:.1f} | {p99:.1f} |" if args.markdown else
                     f"  {op:<9} {len(values):>7} requests  p50 {p50:6.1f} p95 {p95:6.1f} p99 {p99:6.1f} ms")
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(tally.statuses.items()))
    total = f"{tally.requests} requests, {tally.requests / elapsed:.0f}/s; statuses {statuses}"
    lines += ["", total, ""] if args.markdown else [f"  {total}"]
    for name, ok, detail in results:
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {name} ({detail})" if args.markdown else
                     f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    for where, status, body in tally.server_errors[:5]:
        lines.append(f"  {status} {where}: {body}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--database-url", help="postgresql+psycopg://… server to create a database on "
                                               "(default: a SQLite file in a temporary directory)")
    parser.add_argument("--markdown", action="store_true", help="print the result as a docs section")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and database")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sbt-load-"))
    database = Database(args.database_url, workdir)
    backend = "PostgreSQL" if database.admin_url else "SQLite"
    key_file = workdir / "signing-key.pem"
    generate_key_file(key_file, "ES256")
    settings = Settings(database_url=database.url, signing_key_file=key_file, data_dir=workdir, env="test")
    engine = make_engine(settings.database_url, pool_size=1)
    with make_session_factory(engine)() as session:
        tokens = [issue_token_offline(settings, session, TokenCreate(
            agency=agency, name=f"load check {agency}", scopes=scopes, expires_in_days=1))[1]
            for agency, scopes in (("BKN", ALL_SCOPES), ("KASN", ALL_SCOPES[:2]),
                                   ("KEMENDAGRI", ALL_SCOPES[:2]), ("BAWASLU", ALL_SCOPES[:2]))]
        events_before = int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
    engine.dispose()

    port = free_port()
    server = start_server(settings, port, workdir / "server.log")
    tally = Tally()
    try:
        elapsed = asyncio.run(run_load(f"http://127.0.0.1:{port}", tokens, args.clients, args.seconds, tally))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    results = check(settings, tally, events_before)
    print(report(args, backend, elapsed, tally, results))
    if args.keep:
        kept_database = f" and database {database.url}" if database.admin_url else ""
        print(f"kept {workdir}{kept_database}", file=sys.stderr)
    else:
        database.drop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
