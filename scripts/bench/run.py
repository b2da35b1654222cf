"""`make bench`: throughput and latency of the audited service against its baselines (SPEC §11).

One uvicorn worker per server, every server pinned to one core (taskset) and the load generator `wrk`
pinned to the other; arms run alternately, each `--rounds` times, and the median counts:

  A0  a raw ASGI app answering a constant JSON body          (same uvicorn settings as `sbt serve`)
  A1  a bare FastAPI `async def` endpoint returning a dict   (same uvicorn settings as `sbt serve`)
  A2  the service's authenticated, audited read: GET /v1/violations/{id}, or, until that route exists,
      GET /v1/tokens/{id} with an admin token — on SQLite and on PostgreSQL
  B0  a plain single-row INSERT loop, one commit per row, same driver and durability, in-process
  B1  the audited POST /v1/violations (skipped until the route exists)

Then p50/p99 latency of each HTTP arm at 50 % and 80 % of its peak, under open-loop constant-rate load
(scripts/bench/paced.lua), `--latency-rounds` times, alternating, the run with the median p99 counting
(one run's p99 swings by several times on a shared host). A run with any response outside 2xx, or any
socket error, is invalid: nothing is written and the exit status is 1. A valid run whose results miss a
target of SPEC §11 is written and exits with 2 (so `make bench` reports an error). Results go to the
"Throughput and latency" section of docs/benchmarks.md (other sections are kept). Ports 18200-18203;
PostgreSQL database `sbt_bench`.

    make bench
    python scripts/bench/run.py --duration 3 --latency-duration 3 --rounds 1 --latency-rounds 1 --docs none
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    median,
    postgres_version,
    remove_sqlite,
    service_env,
    write_section,
)

HERE = Path(__file__).resolve().parent
PORTS = {"A0": 18200, "A1": 18201, "sqlite": 18202, "postgresql": 18203}
BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PG_DATABASE = "sbt_bench"
# Never the limit being measured: the limiter still runs on every request, it just never says no.
UNLIMITED = "1000000000/second"


class BenchError(RuntimeError):
    """The run cannot go on, or its results would be invalid; the message says why."""


@dataclass
class Arm:
    name: str
    group: str  # A0, A1, A2, B0, B1
    backend: str | None = None
    url: str = ""  # for wrk
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    database_url: str = ""  # for B0
    note: str = ""
    peaks: list[float] = field(default_factory=list)
    latency_runs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def latency(self) -> dict[int, dict[str, Any]]:
        """Per load level, the run with the median p99 (of an odd number of runs, the middle one)."""
        return {pct: sorted(runs, key=lambda r: r["p99_us"])[(len(runs) - 1) // 2]
                for pct, runs in self.latency_runs.items() if runs}

    @property
    def http(self) -> bool:
        return self.group != "B0"

    @property
    def peak(self) -> float:
        return median(self.peaks)


@dataclass
class Backend:
    name: str
    database_url: str
    data_dir: Path
    port: int
    token: str = ""
    env: dict[str, str] = field(default_factory=dict)


# --- tools and cores ----------------------------------------------------------------------------------

def pinned_cores() -> tuple[int, int]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise BenchError(f"needs two cores (server and load generator on one each); this process has {cores}")
    return cores[0], cores[1]


def ensure_tools() -> str:
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found (Debian package util-linux)")
    wrk = shutil.which("wrk")
    if wrk is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise BenchError("wrk not found: install it (Debian package `wrk`) and run again")
        print("installing wrk (apt-get) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
        wrk = shutil.which("wrk")
        if wrk is None:
            raise BenchError("wrk could not be installed")
    return wrk


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).split("Copyright")[0].strip() or "wrk"


# --- servers ------------------------------------------------------------------------------------------

class Servers:
    def __init__(self, core: int, logs: Path) -> None:
        self.core, self.logs = core, logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_files: list[Any] = []

    def start(self, name: str, command: list[str], env: dict[str, str], ready_url: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.log_files.append(log)
        process = subprocess.Popen(["taskset", "-c", str(self.core), *command], env=env, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"server {name} exited ({process.returncode}); see {log.name}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BenchError(f"server {name} did not answer {ready_url} within 60 s")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self.log_files:
            log.close()


def sbt(backend: Backend, *args: str) -> str:
    result = subprocess.run([str(BIN / "sbt"), *args], env=backend.env, cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"sbt {' '.join(args)} failed on {backend.name}: {result.stderr.strip()}")
    return result.stdout.strip()


def prepare_backend(name: str, workdir: Path, args: argparse.Namespace) -> Backend:
    data_dir = workdir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == "sqlite":
        database = data_dir / "sbt.db"
        remove_sqlite(database)
        url = f"sqlite:///{database}"
    else:
        url = create_database(args.postgres, PG_DATABASE)
    backend = Backend(name, url, data_dir, PORTS[name])
    backend.env = service_env(url, data_dir, rate_limit=UNLIMITED, auth_failure_limit=UNLIMITED)
    sbt(backend, "db", "upgrade")
    sbt(backend, "keys", "generate")
    scopes = ["admin", "violations:read", "violations:write", "audit:read"]
    backend.token = sbt(backend, "tokens", "create", "--agency", "BKN", "--name", "benchmark",
                        *[arg for scope in scopes for arg in ("--scope", scope)])
    return backend


# --- arms ---------------------------------------------------------------------------------------------

def service_paths(base: str) -> dict[str, set[str]]:
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    return {path: set(operations) for path, operations in spec.get("paths", {}).items()}


def violation_routes(paths: dict[str, set[str]]) -> tuple[str | None, bool]:
    """The GET /v1/violations/{id} path template if it exists, and whether POST /v1/violations does."""
    read = next((p for p, ops in paths.items() if "get" in ops and p.startswith("/v1/violations/{")
                 and p.count("/") == 3), None)
    return read, "post" in paths.get("/v1/violations", set())


def create_record(base: str, headers: dict[str, str], path: str, body: dict[str, Any]) -> str:
    response = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=10)
    if response.status_code != 201:
        raise BenchError(f"setup POST {path} answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["id"])


def service_arms(backend: Backend) -> tuple[list[Arm], list[str]]:
    base = f"http://127.0.0.1:{backend.port}"
    auth = {"Authorization": f"Bearer {backend.token}"}
    label = BACKEND_NAMES[backend.name]
    read_path, can_create = violation_routes(service_paths(base))
    body = json.loads((HERE / "violation.json").read_text())
    notes = []
    if read_path is not None and can_create:
        record = create_record(base, auth, "/v1/violations", body)
        a2 = Arm(f"A2 {label}", "A2", backend.name, f"{base}/v1/violations/{record}", headers=auth,
                 note="GET /v1/violations/{id}")
    else:
        record = create_record(base, auth, "/v1/tokens", {"agency": "BKN", "name": "bench read target",
                                                          "scopes": ["violations:read"]})
        a2 = Arm(f"A2 {label}", "A2", backend.name, f"{base}/v1/tokens/{record}", headers=auth,
                 note="GET /v1/tokens/{id} (stand-in until GET /v1/violations/{id} exists)")
        notes.append(f"A2 {label}: GET /v1/violations/{{id}} does not exist yet; stand-in "
                     "GET /v1/tokens/{id} with an admin token (authenticated, audited, one row read).")
    arms = [a2, Arm(f"B0 {label}", "B0", backend.name, database_url=_plain_insert_url(backend),
                    note="INSERT + COMMIT per row, in-process")]
    if can_create:
        arms.append(Arm(f"B1 {label}", "B1", backend.name, f"{base}/v1/violations", method="POST",
                        headers={**auth, "Content-Type": "application/json"}, body=json.dumps(body),
                        note="POST /v1/violations"))
    else:
        notes.append(f"B1 {label}: skipped — POST /v1/violations does not exist yet (POST /v1/agencies is no "
                     "stand-in: a small seeded table with a unique code, nothing like a record).")
    return arms, notes


def _plain_insert_url(backend: Backend) -> str:
    if backend.name == "sqlite":
        path = backend.data_dir / "plain-insert.db"  # beside the service's file, on the same disk
        remove_sqlite(path)
        return f"sqlite:///{path}"
    return backend.database_url


def preflight(arm: Arm) -> None:
    response = httpx.request(arm.method, arm.url, headers=arm.headers, content=arm.body, timeout=10)
    if not 200 <= response.status_code < 300:
        raise BenchError(f"{arm.name}: {arm.method} {arm.url} answered {response.status_code}: "
                         f"{response.text[:300]}")


# --- load ---------------------------------------------------------------------------------------------

def arm_script(arm: Arm, workdir: Path, kind: str) -> Path:
    """wrk script: the arm's request, then the closed-loop or paced logic."""
    lines = [f'wrk.method = "{arm.method}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in arm.headers.items()]
    if arm.body is not None:
        if "]==]" in arm.body:
            raise BenchError("request body cannot be quoted for Lua")
        lines.append(f"wrk.body = [==[{arm.body}]==]")
    lines.append(f'dofile("{HERE / (kind + ".lua")}")')
    path = workdir / f"{arm.name.replace(' ', '_')}.{kind}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(wrk: str, core: int, arm: Arm, script: Path, *, threads: int, connections: int,
            seconds: float, extra: list[str]) -> dict[str, Any]:
    command = ["taskset", "-c", str(core), wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
               "--timeout", "10s", "-s", str(script), arm.url]
    if extra:
        command += ["--", *extra]
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 120)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"{arm.name}: wrk failed ({out.returncode}): {out.stderr.strip()[:500]}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
    errors = {k: result[k] for k in ("non2xx", "connect", "read", "write", "timeout") if result[k]}
    if errors:
        raise BenchError(f"{arm.name}: invalid run, responses outside 2xx or socket errors: {errors}")
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def peak(arm: Arm, wrk: str, core: int, workdir: Path, args: argparse.Namespace, seconds: float) -> float:
    if arm.group == "B0":
        out = subprocess.run(["taskset", "-c", str(core), sys.executable, str(HERE / "plain_insert.py"),
                              arm.database_url, str(seconds)], capture_output=True, text=True, check=False,
                             cwd=ROOT, timeout=seconds + 120)
        if out.returncode != 0:
            raise BenchError(f"{arm.name} failed: {out.stderr.strip()[-500:]}")
        return float(json.loads(out.stdout.strip().splitlines()[-1])["rate"])
    script = arm_script(arm, workdir, "closed")
    return float(run_wrk(wrk, core, arm, script, threads=1, connections=args.connections, seconds=seconds,
                         extra=[])["rate"])


def paced(arm: Arm, wrk: str, core: int, workdir: Path, rate: float, seconds: float,
          connections: int) -> dict[str, Any]:
    # One connection per wrk thread, as many as the peak had: with fewer, the client would cap how many
    # requests are in flight, and a service whose single request waits on a durable commit (~2 ms here)
    # could not be offered the rate at all (4 connections capped the audited read near 700/s).
    threads = connections
    script = arm_script(arm, workdir, "paced")
    warmup = min(1.0, seconds / 4)
    result = run_wrk(wrk, core, arm, script, threads=threads, connections=threads, seconds=seconds,
                     extra=[f"{rate / threads:.3f}", f"{warmup:g}", str(threads)])
    result.update(target=rate, threads=threads)
    return result


# --- report -------------------------------------------------------------------------------------------

def report(arms: list[Arm], notes: list[str], info: dict[str, str],
           args: argparse.Namespace) -> tuple[str, bool]:
    by = {a.name: a for a in arms}
    ms = 1000.0

    def ratio(num: str, den: str) -> float | None:
        if num in by and den in by and by[den].peak:
            return by[num].peak / by[den].peak
        return None

    lines = [
        f"Command: `{command_line()}` ({args.rounds} rounds of {args.duration:g} s per arm, alternating; "
        f"{args.latency_rounds} rounds of latency runs of {args.latency_duration:g} s).",
        "",
        f"Machine: {info['nproc']} cores, {info['cpu']}; Linux {info['kernel']}; Python {info['python']}; "
        f"SQLite {info['sqlite']}; {info.get('postgres', 'PostgreSQL not used')}; {info['wrk']}. "
        f"Load average at start: {info['load']}.",
        "",
        "Method: one uvicorn worker per server, pinned with taskset to one core; wrk pinned to the other "
        "(B0 runs in-process on the server core). Every server runs with the uvicorn settings of "
        "`sbt serve` (the baselines through `sbt serve` itself, with only the app swapped). Peak: "
        f"closed loop, {args.connections} connections, median of the rounds. Latency: open loop on as many "
        "connections at a constant rate of 50 % and 80 % of the arm's peak (wrk2-style schedule in "
        "scripts/bench/paced.lua, "
        "timed from each request's scheduled send time, so queueing counts), first second discarded; "
        "the table shows the run with the median p99 of the rounds and lists every run's p99. "
        "Any response outside 2xx or any socket error makes the run invalid. The service runs with its "
        "defaults (SQLite WAL + synchronous=FULL) except the rate limits, raised so that they never trip.",
        "",
        *[f"- {n}" for n in notes],
        *([""] if notes else []),
        "| arm | what | runs (req/s) | median (req/s) |",
        "|---|---|---|---|",
    ]
    for arm in arms:
        runs = ", ".join(f"{p:,.0f}" for p in arm.peaks)
        lines.append(f"| {arm.name} | {arm.note} | {runs} | {arm.peak:,.0f} |")
    lines += ["", "| arm | load | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | "
                  "p99 of each run, ms |", "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        for pct, r in sorted(arm.latency.items()):
            each = ", ".join(f"{run['p99_us'] / ms:.1f}" for run in arm.latency_runs[pct])
            lines.append(f"| {arm.name} | {pct} % of peak | {r['target']:,.0f} | {r['rate']:,.0f} | "
                         f"{r['p50_us'] / ms:.2f} | {r['p99_us'] / ms:.2f} | {r['p999_us'] / ms:.2f} | "
                         f"{each} |")
    checks: list[tuple[str, float | None, bool | None]] = []
    for backend in args.backends:
        label = BACKEND_NAMES[backend]
        a2 = ratio(f"A2 {label}", "A1")
        checks.append((f"A2/A1 {label} ≥ 0.30", a2, None if a2 is None else a2 >= 0.30))
        p99 = by.get(f"A2 {label}", Arm("", "")).latency.get(80, {}).get("p99_us")
        checks.append((f"A2 {label} p99 at 80 % of peak ≤ 15 ms", None if p99 is None else p99 / ms,
                       None if p99 is None else p99 <= 15 * ms))
        b1 = ratio(f"B1 {label}", f"B0 {label}")
        checks.append((f"B1/B0 {label} ≥ 0.5", b1, None if b1 is None else b1 >= 0.5))
    a1 = ratio("A1", "A0")
    lines += ["", f"A1/A0 (FastAPI over raw ASGI): {a1:.2f}" if a1 else "", "",
              "| target (SPEC §11) | measured | result |", "|---|---|---|"]
    passed = True
    for label, value, ok in checks:
        shown = "—" if value is None else f"{value:.2f}" + (" ms" if "ms" in label else "")
        verdict = "skipped" if ok is None else ("pass" if ok else "FAIL")
        passed = passed and ok is not False
        lines.append(f"| {label} | {shown} | {verdict} |")
    return "\n".join(lines), passed


# --- main ---------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per peak run")
    parser.add_argument("--latency-duration", type=float, default=10, help="seconds per latency run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rounds", type=int, default=3,
                        help="latency runs per arm and load level (the median p99 counts)")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=os.environ.get("SBT_BENCH_POSTGRES", DEFAULT_PG),
                        help="server for the throwaway database sbt_bench")
    parser.add_argument("--docs", default=str(DOCS), help="markdown file for the results, or 'none'")
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    server_core, load_core = pinned_cores()
    wrk = ensure_tools()
    info = machine_info()
    info["wrk"] = wrk_version(wrk)
    info["load"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    workdir = BENCH_DIR / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    servers = Servers(server_core, workdir)
    backends: list[Backend] = []
    try:
        for name in args.backends:
            print(f"preparing {BACKEND_NAMES[name]} ...", flush=True)
            backends.append(prepare_backend(name, workdir, args))
            if name == "postgresql":
                info["postgres"] = f"PostgreSQL {postgres_version(backends[-1].database_url).split()[0]}"
        baseline_env = backends[0].env
        servers.start("A0", [sys.executable, str(HERE / "serve.py"), "raw", str(PORTS["A0"])], baseline_env,
                      f"http://127.0.0.1:{PORTS['A0']}/")
        servers.start("A1", [sys.executable, str(HERE / "serve.py"), "fastapi", str(PORTS["A1"])],
                      baseline_env, f"http://127.0.0.1:{PORTS['A1']}/")
        arms = [Arm("A0", "A0", url=f"http://127.0.0.1:{PORTS['A0']}/", note="raw ASGI, constant body"),
                Arm("A1", "A1", url=f"http://127.0.0.1:{PORTS['A1']}/", note="FastAPI, constant dict")]
        notes: list[str] = []
        for backend in backends:
            servers.start(backend.name, [str(BIN / "sbt"), "serve", "--port", str(backend.port)], backend.env,
                          f"http://127.0.0.1:{backend.port}/readyz")
            more, why = service_arms(backend)
            arms += more
            notes += why
        for arm in arms:
            if arm.http:
                preflight(arm)
        print("warming up ...", flush=True)
        for arm in arms:
            peak(arm, wrk, load_core, workdir, args, min(2.0, args.duration))
        for round_ in range(1, args.rounds + 1):
            for arm in arms:
                arm.peaks.append(peak(arm, wrk, load_core, workdir, args, args.duration))
                print(f"round {round_}: {arm.name:<16} {arm.peaks[-1]:>10,.0f} req/s", flush=True)
        for round_ in range(1, args.latency_rounds + 1):
            for pct in (50, 80):
                for arm in arms:
                    if arm.http:
                        result = paced(arm, wrk, load_core, workdir, arm.peak * pct / 100,
                                       args.latency_duration, args.connections)
                        arm.latency_runs.setdefault(pct, []).append(result)
                        print(f"round {round_}, {pct} % of peak: {arm.name:<16} "
                              f"target {result['target']:>9,.0f} achieved {result['rate']:>9,.0f} req/s  "
                              f"p50 {result['p50_us'] / 1000:6.2f} ms  p99 {result['p99_us'] / 1000:6.2f} ms",
                              flush=True)
    finally:
        servers.stop()
        if "postgresql" in args.backends:
            drop_database(args.postgres, PG_DATABASE)
    body, passed = report(arms, notes, info, args)
    print()
    print(body)
    if args.docs != "none":
        write_section(Path(args.docs), "Throughput and latency", body)
        print(f"\nwrote the Throughput and latency section of {args.docs}")
    return 0 if passed else 2


if __name__ == "__main__":
    sys.exit(main())
