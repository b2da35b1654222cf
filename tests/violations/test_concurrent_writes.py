"""More writes at once than the service has worker threads never wedge it.

On PostgreSQL, writes used to open their transactions concurrently and then wait for row locks (the year's
case counter, the chain head) inside worker threads. With enough of them in flight, every worker thread
was waiting for the row of a transaction that needed a thread to commit, and the service stopped answering
for good. Writes now queue on the event loop (app.audit.writer.WriteLock) on both databases, so at most one
write transaction of a process is ever open, and none waits for a lock in a thread.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app.config import Settings
from app.main import create_app
from app.violations import service
from tests.conftest import bearer
from tests.violations.conftest import VALID_BODY

CLIENTS = 12
WORKER_THREADS = 4  # fewer than the writes in flight


def unstick(url: str) -> None:
    """PostgreSQL: end the test database's sessions waiting for a lock (their requests then fail)."""
    if not url.startswith("postgresql"):
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ))
    finally:
        engine.dispose()


def test_more_concurrent_creates_than_worker_threads_all_finish_one_transaction_at_a_time(
    settings: Settings, agency_tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_flight = 0
    most = 0
    guard = threading.Lock()
    create = service.create_violation

    def counted(**kwargs: Any) -> Any:
        nonlocal in_flight, most
        with guard:
            in_flight += 1
            most = max(most, in_flight)
        try:
            return create(**kwargs)
        finally:
            with guard:
                in_flight -= 1

    monkeypatch.setattr(service, "create_violation", counted)
    headers = bearer(agency_tokens["BAWASLU"])
    with TestClient(create_app(settings)) as client:
        def few_worker_threads() -> None:  # runs on the app's event loop
            anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS

        assert client.portal is not None
        client.portal.call(few_worker_threads)
        barrier = threading.Barrier(CLIENTS)

        def post(_: int) -> tuple[int, str]:
            barrier.wait(timeout=30)
            response = client.post("/v1/violations", json=VALID_BODY, headers=headers)
            return response.status_code, response.json().get("case_number", response.text)

        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(post, n) for n in range(CLIENTS)]
            _, stuck = wait(futures, timeout=60)
            wedged = bool(stuck)
            while stuck:  # end the lock waits, round after round, so the test fails instead of hanging
                unstick(settings.database_url)
                _, stuck = wait(stuck, timeout=5)
            results = [future.result() for future in futures]

    assert not wedged, "concurrent creates wedged the service"
    assert [status for status, _ in results] == [201] * CLIENTS, results
    assert len({number for _, number in results}) == CLIENTS  # every create its own case number
    assert most == 1  # never two write transactions open in one process
