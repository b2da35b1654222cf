"""Server CPU per request: the measure used to decide what each optimisation bought.

Starts `sbt serve` pinned to core 0 (a throwaway SQLite file, or a throwaway PostgreSQL database),
loads it closed-loop with wrk on core 1 (32 connections), and divides the server process's CPU time
(user + system, all its threads, from /proc) by the requests served. Unlike req/s, this barely moves
when something else runs on the other core.

    python scripts/bench/cpu.py [--backend sqlite|postgresql] [--arms A2,B1] [--seconds 5] [--rounds 3]

A2 is GET /v1/violations/{id}; B1 is POST /v1/violations (the bench's sample case). Any response
outside 2xx makes the run fail.
"""
# ruff: noqa: S603, S607 - a benchmark driver runs the tools it names

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import BENCH_DIR, BIN, DEFAULT_PG, ROOT, create_database, drop_database, service_env
from run import BenchError, ensure_tools

HERE = Path(__file__).resolve().parent
PORT = 18290
DATABASE = "sbt_cpu"
UNLIMITED = "1000000000/second"


def server_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    user, system = int(fields[11]) / tick, int(fields[12]) / tick
    return user + system, system


def script(path: Path, token: str, body: str | None) -> Path:
    lines = [f'wrk.headers["Authorization"] = "Bearer {token}"',
             'response = function(status) if status >= 300 then io.write("NOT2XX\\n") end end']
    if body is not None:
        lines += ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"',
                  f"wrk.body = [[{body}]]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--arms", default="A2,B1")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("SBT_BENCH_POSTGRES", DEFAULT_PG))
    args = parser.parse_args()
    try:
        wrk = ensure_tools()  # installs wrk when missing, as make bench does
    except BenchError as exc:
        print(f"cpu: {exc}", file=sys.stderr)
        return 1
    work = BENCH_DIR / "cpu"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    url = f"sqlite:///{work}/sbt.db" if args.backend == "sqlite" else create_database(args.postgres, DATABASE)
    env = service_env(url, work, rate_limit=UNLIMITED, auth_failure_limit=UNLIMITED)

    def sbt(*words: str) -> str:
        return subprocess.run([str(BIN / "sbt"), *words], env=env, cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    sbt("db", "upgrade")
    sbt("keys", "generate")
    token = sbt("tokens", "create", "--agency", "BKN", "--name", "cpu", "--scope", "violations:read",
                "--scope", "violations:write")
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(["taskset", "-c", "0", str(BIN / "sbt"), "serve", "--port", str(PORT)],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{PORT}"
    failed = False
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        body = json.dumps(json.loads((HERE / "violation.json").read_text()))
        created = httpx.post(f"{base}/v1/violations", content=body, timeout=10, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        record = created.json()["id"]
        targets = {"A2": (f"{base}/v1/violations/{record}", script(work / "a2.lua", token, None)),
                   "B1": (f"{base}/v1/violations", script(work / "b1.lua", token, body))}
        for arm in args.arms.split(","):
            url_, lua = targets[arm]
            for round_ in range(args.rounds + 1):  # the first round warms up
                before, sys_before = server_cpu_seconds(server.pid)
                out = subprocess.run(["taskset", "-c", "1", wrk, "-t1", "-c32", f"-d{args.seconds}s", "-s",
                                      str(lua), url_], capture_output=True, text=True, check=True).stdout
                after, sys_after = server_cpu_seconds(server.pid)
                rate = float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[1])
                bad = out.count("NOT2XX")
                failed |= bad > 0
                served = rate * args.seconds
                if round_:
                    cpu_ms = (after - before) / served * 1000
                    sys_ms = (sys_after - sys_before) / served * 1000
                    print(f"{args.backend} {arm}: {rate:8,.0f} req/s, server CPU {cpu_ms:.3f} ms/request "
                          f"(system {sys_ms:.3f}), non-2xx {bad}", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
        if args.backend == "postgresql":
            drop_database(args.postgres, DATABASE)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
