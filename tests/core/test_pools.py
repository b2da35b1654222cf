"""Database pools: sized by settings on PostgreSQL, and a request's read connection goes back to the pool
before the request waits for its audit batch (else every request in flight holds one, and past the pool
each peak opens and closes server processes)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.audit.writer import AuditWriter
from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from tests.conftest import TokenFactory, bearer


def test_postgres_pools_follow_the_settings(settings: Settings, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite keeps its own pool size; its reads run on the event loop's connection")
    runtime = Runtime.build(settings.model_copy(update={"db_pool_size": 3, "db_read_pool_size": 7}))
    try:
        assert runtime.engine.pool.size() == 3  # type: ignore[attr-defined]
        assert runtime.read_engine is not None
        assert runtime.read_engine.pool.size() == 7  # type: ignore[attr-defined]
    finally:
        runtime.engine.dispose()
        if runtime.read_engine is not None:
            runtime.read_engine.dispose()


def test_defaults_keep_a_read_connection_per_worker_thread(settings: Settings) -> None:
    assert (settings.db_pool_size, settings.db_read_pool_size) == (20, 40)


def test_a_read_returns_its_connection_before_waiting_for_its_audit_event(
    settings: Settings, backend: str, issue_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite reads on the event loop's own connection, never a pooled one")
    application = create_app(settings)
    runtime: Runtime = application.state.runtime
    assert runtime.read_engine is not None
    checked_out: list[int] = []
    append = AuditWriter.append

    async def watched(self: AuditWriter, *args: Any, **kwargs: Any) -> dict[str, Any]:
        checked_out.append(runtime.read_engine.pool.checkedout())  # type: ignore[union-attr]
        return await append(self, *args, **kwargs)

    monkeypatch.setattr(AuditWriter, "append", watched)
    token = issue_token("BKN", "violations:read")
    with TestClient(application) as client:
        # The token check and the record read are both driver-level reads on the autocommit pool.
        response = client.get(f"/v1/violations/{uuid.uuid4()}", headers=bearer(token))
    assert response.status_code == 404
    assert checked_out == [0]
