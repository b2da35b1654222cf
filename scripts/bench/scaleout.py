"""Scale-out check: one PostgreSQL, rate limits in Redis, the service with 1 and then 2 uvicorn workers.

Each worker is an independent instance (its own pools, audit writer and rate-limit client), as N
instances behind a load balancer would be. For each worker count: closed-loop wrk (32 connections, not
pinned: the workers get both cores and share them with wrk and PostgreSQL) on the audited read and on
the audited create; then the chain must verify and the audit log must hold one event per request.

    python scripts/bench/scaleout.py [--seconds 10] [--docs docs/benchmarks.md|none]

Writes the "Scale-out: several workers on one PostgreSQL" section of docs/benchmarks.md.
"""
# ruff: noqa: S603 - a benchmark driver runs the tools it names

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import (
    BENCH_DIR,
    BIN,
    DEFAULT_PG,
    DOCS,
    ROOT,
    command_line,
    create_database,
    drop_database,
    machine_info,
    service_env,
    write_section,
)
from run import BenchError, ensure_tools
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
PORT = 18250
DATABASE = "sbt_scaleout"
REDIS = "redis://127.0.0.1:6379/15"
HEADING = "Scale-out: several workers on one PostgreSQL"


def sbt(env: dict[str, str], *args: str) -> str:
    return subprocess.run([str(BIN / "sbt"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def wrk(tool: str, url: str, script: Path, seconds: float) -> tuple[float, int]:
    out = subprocess.run([tool, "-t2", "-c32", f"-d{int(seconds)}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[1])
    return rate, out.count("NOT2XX")


def lua(path: Path, token: str, *, method: str = "GET", body: str | None = None) -> Path:
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {token}"',
             'response = function(status) if status >= 300 then io.write("NOT2XX\\n") end end']
    if body is not None:
        lines += ['wrk.headers["Content-Type"] = "application/json"', f"wrk.body = [[{body}]]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(workers: int, args: argparse.Namespace, workdir: Path) -> dict[str, float | int | bool]:
    url = create_database(args.postgres, DATABASE)
    env = service_env(url, workdir, rate_limit="1000000000/second", auth_failure_limit="1000000000/second",
                      rate_limit_storage=REDIS)
    sbt(env, "db", "upgrade")
    sbt(env, "keys", "generate")
    token = sbt(env, "tokens", "create", "--agency", "BKN", "--name", "scale-out", "--scope",
                "violations:read", "--scope", "violations:write", "--scope", "audit:read")
    log = (workdir / f"serve-{workers}.log").open("wb")
    server = subprocess.Popen([str(BIN / "sbt"), "serve", "--port", str(PORT), "--workers", str(workers)],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        body = (HERE / "violation.json").read_text()
        auth = {"Authorization": f"Bearer {token}"}
        record = httpx.post(f"{base}/v1/violations", content=body, timeout=10,
                            headers={**auth, "Content-Type": "application/json"}).json()["id"]
        read = lua(workdir / "read.lua", token)
        create = lua(workdir / "create.lua", token, method="POST", body=json.dumps(json.loads(body)))
        wrk(args.wrk, f"{base}/v1/violations/{record}", read, 2)  # warm-up
        read_rate, read_bad = wrk(args.wrk, f"{base}/v1/violations/{record}", read, args.seconds)
        create_rate, create_bad = wrk(args.wrk, f"{base}/v1/violations", create, args.seconds)
        verify = httpx.get(f"{base}/v1/audit/verify", headers=auth, timeout=120).json()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    engine = create_engine(url)
    with engine.connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
        feed_ok = conn.execute(text("SELECT count(*) = coalesce(max(seq), 0) FROM changes")).scalar_one()
    engine.dispose()
    drop_database(args.postgres, DATABASE)
    return {"workers": workers, "read": read_rate, "create": create_rate, "not_2xx": read_bad + create_bad,
            "chain_ok": bool(verify.get("ok")), "events": events, "feed_gapless": bool(feed_ok)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--postgres", default=os.environ.get("SBT_BENCH_POSTGRES", DEFAULT_PG))
    parser.add_argument("--docs", default=str(DOCS))
    args = parser.parse_args()
    try:
        args.wrk = ensure_tools()  # installs wrk when missing, as make bench does
    except BenchError as exc:
        print(f"scaleout: {exc}", file=sys.stderr)
        return 1
    workdir = BENCH_DIR / "scaleout"
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    results = [run(workers, args, workdir) for workers in (1, 2)]
    lines = [
        f"Command: `{command_line()}`. Machine: {info['nproc']} cores, {info['cpu']}; load average at start: "
        f"{load}. PostgreSQL on the same machine, rate-limit storage in the local Redis; wrk with 2 threads "
        f"and 32 connections, nothing pinned, {args.seconds:g} s per arm.",
        "",
        "| workers | GET /v1/violations/{id} req/s | POST /v1/violations req/s | non-2xx | chain verifies "
        "| feed without gaps |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['workers']} | {r['read']:,.0f} | {r['create']:,.0f} | {r['not_2xx']} | "
                     f"{'yes' if r['chain_ok'] else 'NO'} ({r['events']:,} events) | "
                     f"{'yes' if r['feed_gapless'] else 'NO'} |")
    body = "\n".join(lines)
    print(body)
    if args.docs != "none":
        write_section(Path(args.docs), HEADING, body)
    ok = all(r["chain_ok"] and r["feed_gapless"] and not r["not_2xx"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
