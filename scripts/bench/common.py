"""Shared pieces of the benchmark scripts: paths, machine facts, throwaway databases, docs sections."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BENCH_DIR = ROOT / "var" / "bench"
DOCS = ROOT / "docs" / "benchmarks.md"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Read by the test suite only; harmless to pass through.
_KEEP_ENV = {"SBT_TEST_DATABASE_URL"}

if str(ROOT) not in sys.path:  # the scripts import the app without being installed next to it
    sys.path.insert(0, str(ROOT))


def machine_info() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def postgres_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


def database_url(base: str, name: str) -> str:
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def create_database(base: str, name: str) -> str:
    """A fresh PostgreSQL database `name` on the server of `base` (dropped first if left over)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"unsafe database name {name!r}")
    admin = create_engine(database_url(base, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return database_url(base, name)


def drop_database(base: str, name: str) -> None:
    admin = create_engine(database_url(base, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def service_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for an `sbt` subprocess: only the SBT_* settings given here (typos stop start-up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBT_") or k in _KEEP_ENV}
    env["SBT_DATABASE_URL"] = database_url
    env["SBT_DATA_DIR"] = str(data_dir)
    for name, value in settings.items():
        env[f"SBT_{name.upper()}"] = value
    return env


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace the `## heading` section of a markdown file (or append it), keeping every other section."""
    title = f"## {heading}"
    text_ = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text_.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    new = [title, "", *body.rstrip("\n").splitlines()]
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *new]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = [*new, ""] if end < len(lines) else new
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def command_line() -> str:
    """How this script was started, for the docs (make targets export BENCH_COMMAND)."""
    return os.environ.get("BENCH_COMMAND") or " ".join(["python", *sys.argv])
