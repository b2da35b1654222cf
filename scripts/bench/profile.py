"""Where the time of the authenticated, audited read goes: py-spy samples a pinned `sbt serve` under wrk.

    .venv/bin/pip install py-spy            # a developer tool; not a dependency of the project
    python scripts/bench/profile.py [--backend sqlite|postgresql] [--seconds 15] [--arm A2|B1]

The server is set up as in scripts/bench/run.py (port 18204, database `sbt_profile` on PostgreSQL), loaded
closed-loop by wrk for `--seconds` while py-spy records it without pausing it (both on the other core).
Prints the functions with the most samples on CPU — on their own ("self") and with what they call
("total") — and a breakdown by package. The raw samples stay in var/bench/profile/.
"""
# ruff: noqa: S603, S607 - a benchmark driver runs the tools it names

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import run as bench
from common import BENCH_DIR, BIN, DEFAULT_PG, drop_database

PORT = 18204
AREAS = (  # first match wins: where a frame's file lives
    ("app.audit.writer (group commit)", "/app/audit/writer.py"),
    ("app.audit.chain (append, hash)", "/app/audit/chain.py"),
    ("app.audit.canonical", "/app/audit/canonical.py"),
    ("app.middleware (edge)", "/app/middleware.py"),
    ("app.routing (gate)", "/app/routing.py"),
    ("app.auth (token, principal)", "/app/auth/"),
    ("app.ratelimit", "/app/ratelimit.py"),
    ("app.metrics / prometheus", "/app/metrics.py"),
    ("app (other)", "/app/"),
    ("sqlalchemy", "/sqlalchemy/"),
    ("sqlite3 / psycopg (driver)", "/sqlite3/"),
    ("sqlite3 / psycopg (driver)", "/psycopg/"),
    ("jose / cryptography / ecdsa", "/jose/"),
    ("jose / cryptography / ecdsa", "/cryptography/"),
    ("jose / cryptography / ecdsa", "/ecdsa/"),
    ("pydantic", "/pydantic"),
    ("fastapi", "/fastapi/"),
    ("starlette", "/starlette/"),
    ("uvicorn", "/uvicorn/"),
    ("anyio / asyncio / threads", "/anyio/"),
    ("anyio / asyncio / threads", "/asyncio/"),
    ("anyio / asyncio / threads", "/threading.py"),
    ("anyio / asyncio / threads", "/concurrent/"),
    ("limits", "/limits/"),
    ("prometheus_client", "/prometheus_client/"),
    ("json / logging / stdlib", "/json/"),
    ("json / logging / stdlib", "/logging/"),
)
# Top frames of a thread with nothing to do: pool threads waiting for work, the event loop in epoll (uvloop
# runs in C under Runner.run, so its own C work lands there too; it is reported, not attributed).
WAITING = {"Condition.wait", "Queue.get", "Runner.run", "select", "poll", "epoll", "Event.wait",
           "Lock.acquire"}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def area_of(file: str) -> str:
    return next((name for name, part in AREAS if part in file), "other (stdlib, C)")


def short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['func']} ({file})"


def summarize(raw: Path, top: int) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        top_name = short(frames[-1]).split(" (")[0]
        if top_name in WAITING:
            waiting[top_name] += count
            continue
        samples += count
        own[short(frames[-1])] += count
        for name in {short(f) for f in frames}:
            total[name] += count
        match = _FRAME.match(frames[-1])
        areas[area_of(match["file"] if match else frames[-1])] += count
    idle = sum(waiting.values())
    lines = [f"{samples} samples of busy threads; left out, waiting: {idle} "
             f"({', '.join(f'{k} {v}' for k, v in waiting.most_common())})", "",
             "by package (self time of the frame on top):"]
    lines += [f"  {100 * n / samples:5.1f} %  {name}" for name, n in areas.most_common()]
    lines += ["", f"top {top} functions, self:"]
    lines += [f"  {100 * n / samples:5.1f} %  {name}" for name, n in own.most_common(top)]
    lines += ["", f"top {top} functions, total (with callees):"]
    lines += [f"  {100 * n / samples:5.1f} %  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--arm", choices=["A2", "B1"], default="A2")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--gil", action="store_true", help="only samples of the thread holding the GIL")
    parser.add_argument("--postgres", default=DEFAULT_PG)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    server_core, tool_core = bench.pinned_cores()
    wrk = bench.ensure_tools()
    workdir = BENCH_DIR / "profile"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    bench.PORTS[args.backend] = PORT
    bench.PG_DATABASE = "sbt_profile"
    servers = bench.Servers(server_core, workdir)
    raw = workdir / "samples.txt"
    try:
        backend = bench.prepare_backend(args.backend, workdir, args)
        servers.start("sbt", [str(BIN / "sbt"), "serve", "--port", str(PORT)], backend.env,
                      f"http://127.0.0.1:{PORT}/readyz")
        arms, notes = bench.service_arms(backend)
        arm = next((a for a in arms if a.group == args.arm), None)
        if arm is None:
            print(f"arm {args.arm} is not available: {' '.join(notes)}", file=sys.stderr)
            return 1
        bench.preflight(arm)
        bench.peak(arm, wrk, tool_core, workdir, args, 2)  # warm up
        # Without pausing the server (--nonblocking), which also means py-spy cannot tell idle threads:
        # summarize() drops the samples of threads waiting for work.
        recorder = subprocess.Popen(
            ["taskset", "-c", str(tool_core), py_spy, "record", "--pid", str(servers.processes[0].pid),
             "--duration", str(int(args.seconds)), "--rate", str(args.rate), "--nonblocking", "--threads",
             *(["--gil"] if args.gil else []),
             "--full-filenames", "--format", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        load: dict[str, float] = {}
        worker = threading.Thread(target=lambda: load.update(
            rate=bench.peak(arm, wrk, tool_core, workdir, args, args.seconds)))
        worker.start()
        _, err = recorder.communicate()
        worker.join()
        if recorder.returncode != 0 or not raw.exists():
            print(f"py-spy failed: {err.decode()[-500:]}", file=sys.stderr)
            return 1
    finally:
        servers.stop()
        if args.backend == "postgresql":
            drop_database(args.postgres, "sbt_profile")
    print(f"{arm.name} ({arm.note}): {load.get('rate', 0):,.0f} req/s under py-spy, {args.connections} "
          f"connections, {args.seconds:g} s")
    print(summarize(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
