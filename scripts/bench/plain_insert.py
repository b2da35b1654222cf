"""B0: a plain single-row INSERT loop, one commit per row, through the service's own driver and durability.

    python scripts/bench/plain_insert.py DATABASE_URL SECONDS    (prints one JSON line)

The connection comes from `app.db.make_engine`, so SQLite runs in WAL mode with synchronous=FULL exactly
as the service does, and PostgreSQL through psycopg with the service's connection settings. Each row is
one transaction (BEGIN IMMEDIATE ... COMMIT on SQLite, as the service's writes; INSERT + COMMIT on
PostgreSQL) of a record-sized row: an id, a timestamp and the JSON body that B1 posts.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.db import make_engine

TABLE = "bench_plain_insert"


def main() -> int:
    url, seconds = sys.argv[1], float(sys.argv[2])
    body = json.dumps(json.loads(Path(__file__).with_name("violation.json").read_text()))
    engine = make_engine(url, pool_size=1)
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        sqlite = url.startswith("sqlite")
        cursor = db.cursor()
        if sqlite:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id VARCHAR(36) PRIMARY KEY, "
                           "created_at DATETIME NOT NULL, body JSON NOT NULL)")
            insert = f"INSERT INTO {TABLE} (id, created_at, body) VALUES (?, ?, ?)"  # noqa: S608
        else:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id UUID PRIMARY KEY, "
                           "created_at TIMESTAMPTZ NOT NULL, body JSON NOT NULL)")
            db.commit()
            insert = f"INSERT INTO {TABLE} (id, created_at, body) VALUES (%s, %s, %s)"  # noqa: S608
        rows = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            now = datetime.now(UTC)
            if sqlite:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute(insert, (str(uuid.uuid4()), now.isoformat(" "), body))
                cursor.execute("COMMIT")
            else:
                cursor.execute(insert, (uuid.uuid4(), now, body))
                db.commit()
            rows += 1
        elapsed = time.perf_counter() - started
    finally:
        raw.close()
        engine.dispose()
    print(json.dumps({"rows": rows, "seconds": elapsed, "rate": rows / elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
