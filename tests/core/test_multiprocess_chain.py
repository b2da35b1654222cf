"""Two server processes writing to one database still leave one unforked, gapless chain."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from app.audit.chain import verify_documents
from app.audit.service import iter_documents
from app.config import Settings
from tests.conftest import TokenFactory, audit_rows, bearer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBT_")}
    env |= {
        "SBT_DATABASE_URL": settings.database_url,
        "SBT_SIGNING_KEY_FILE": str(settings.key_file),
        "SBT_DATA_DIR": str(settings.data_dir),
        "SBT_CHECKPOINT_INTERVAL_SECONDS": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server on {port} did not start: {log.read_text()[-2000:]}")


@pytest.fixture
def two_servers(settings: Settings, tmp_path: Path) -> Iterator[list[str]]:
    processes = []
    urls = []
    try:
        for n in range(2):
            port = _free_port()
            processes.append(_start_server(settings, port, tmp_path / f"server{n}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_concurrent_writers_in_two_processes_share_one_chain(
    two_servers: list[str], issue_token: TokenFactory, db: Session
) -> None:
    admin = issue_token("BKN", "admin")
    before = len(audit_rows(db))
    failures: list[str] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=two_servers[n % 2], timeout=30) as http:
            for i in range(25):
                if i % 3 == 0:
                    r = http.post(
                        "/v1/agencies", json={"code": f"P{n}_{i}", "name": "x"}, headers=bearer(admin)
                    )
                    ok = r.status_code == 201
                else:
                    r = http.get("/v1/agencies", headers=bearer(admin))
                    ok = r.status_code == 200
                if not ok:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    rows = audit_rows(db)
    assert len(rows) == before + 200
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    db.rollback()
    result = verify_documents(iter_documents(db))
    assert result.ok, result
