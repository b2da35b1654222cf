"""Alembic builds the schema from nothing without drift; health, readiness and metrics behave."""

from __future__ import annotations

import argparse
import gc
import importlib

import pytest
import uvicorn
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from app import cli, main, migrate
from app.config import Settings
from app.main import GC_THRESHOLDS, create_app
from app.violations.models import PROVINCE_SQL
from tests.conftest import TokenFactory, audit_rows, bearer

# SQLite's reflection cannot read expression-based indexes, so on SQLite `alembic check` leaves the two
# province indexes (violations.models.PROVINCE_SQL) out of its comparison, with a warning for each; the
# drift test checks them there by their stored definition instead (PostgreSQL compares them itself).
sqlite_skips_expression_indexes = pytest.mark.filterwarnings(
    "ignore:(Skipped unsupported reflection of|autogenerate skipping metadata-specified)"
    " expression-based index"
)


@sqlite_skips_expression_indexes
def test_upgrade_from_empty_to_head_has_no_drift(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    migrate.upgrade(empty_db_url)  # idempotent
    command.check(migrate.alembic_config(empty_db_url))  # raises when models and migrations differ
    engine = create_engine(empty_db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"agencies", "api_tokens", "audit_events", "audit_event_resources", "chain_head"} <= tables
        assert migrate.at_head(engine, empty_db_url)
        if engine.dialect.name == "sqlite":
            query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE :name"
            with engine.connect() as connection:
                rows = connection.execute(text(query), {"name": "ix_violations_province%"}).all()
            stored = {name: sql for name, sql in rows}
            assert stored == {
                f"ix_violations_province_{c}": f"CREATE INDEX ix_violations_province_{c} ON violations "
                                               f"({PROVINCE_SQL}, {c}_at, id)"
                for c in ("created", "updated")
            }
    finally:
        engine.dispose()


@sqlite_skips_expression_indexes
def test_downgrade_to_base_and_back(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    command.downgrade(migrate.alembic_config(empty_db_url), "base")
    engine = create_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate.upgrade(empty_db_url)
    command.check(migrate.alembic_config(empty_db_url))


def test_healthz_needs_no_database_and_is_not_audited(client: TestClient, db) -> None:  # type: ignore[no-untyped-def]
    before = len(audit_rows(db))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/.well-known/jwks.json").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert len(audit_rows(db)) == before


def test_readyz_is_503_when_the_schema_is_not_at_head(empty_db_url: str, settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"database_url": empty_db_url}))) as client:
        response = client.get("/readyz")
    assert response.status_code == 503


def test_metrics_count_requests_by_route_template(client: TestClient, issue_token: TokenFactory) -> None:
    token = issue_token("BKN", "admin")
    client.get("/v1/agencies", headers=bearer(token))
    client.get("/v1/tokens/00000000-0000-0000-0000-000000000000", headers=bearer(token))
    text = client.get("/metrics").text
    assert 'sbt_requests_total{method="GET",route="/v1/agencies",status="200"} 1.0' in text
    assert 'route="/v1/tokens/{token_id}",status="404"' in text
    assert "sbt_request_duration_seconds_bucket" in text
    assert "sbt_audit_events_written_total" in text


def test_the_served_app_freezes_start_up_objects_out_of_the_collector(settings: Settings) -> None:
    """`sbt serve` runs create_served_app: after start-up the collector never walks the start-up objects
    again (a full collection of them set the p99 latency) and young collections are rarer."""
    thresholds = gc.get_threshold()
    try:
        with TestClient(create_app(settings, freeze_gc=True)) as client:
            assert client.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_apps_made_elsewhere_leave_the_collector_alone(settings: Settings) -> None:
    """Tests and embedders create many apps in one process; freezing there would keep their garbage."""
    thresholds = gc.get_threshold()
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds


def test_sbt_serve_runs_the_served_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: served.update(target=target, **options))
    made: dict[str, object] = {}
    monkeypatch.setattr(main, "create_app", lambda **options: made.update(options))
    assert cli.cmd_serve(settings, argparse.Namespace(host="127.0.0.1", port=0, workers=1)) == 0
    module, _, name = str(served["target"]).partition(":")
    assert served["factory"] is True
    getattr(importlib.import_module(module), name)()
    assert made == {"freeze_gc": True}
