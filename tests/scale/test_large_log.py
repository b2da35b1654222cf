"""Slow scale tests (`make test-slow`): a log of half a million events stays verifiable and queryable.

Timing is measured by `make bench-scale`, never asserted here; these tests check that correctness holds
at a size where the split, chunked and indexed code paths all take part.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import cli
from app.audit import service
from app.config import Settings, get_settings

EVENTS = 500_000
BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"

pytestmark = pytest.mark.slow


def _scale_module() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("sbt_bench_scale", BENCH / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def large_log(settings: Settings, backend: str, tmp_path: Path) -> object:
    scale = _scale_module()
    scenario = scale.Scenario(seed=11, record_count=20_000)
    target = scale.Target(backend=backend, url=settings.database_url, data_dir=tmp_path)
    scale.load_audit_events(target, scenario, argparse.Namespace(events=EVENTS))
    return scenario


def _verify_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.setenv("SBT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SBT_SIGNING_KEY_FILE", str(settings.key_file))
    monkeypatch.setenv("SBT_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        code = cli.main(["audit", "verify"])
    finally:
        get_settings.cache_clear()
    return code, capsys.readouterr().out


def test_half_a_million_events_verify_and_one_edit_is_found(
    large_log: object,
    settings: Settings,
    backend: str,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _verify_cli(settings, monkeypatch, capsys) == (0, "")
    db.rollback()
    if backend == "postgresql":
        db.execute(text("SET session_replication_role = replica"))  # step past the append-only trigger
    db.execute(text("UPDATE audit_events SET user_agent = 'forged' WHERE seq = 345678"))
    db.commit()
    assert _verify_cli(settings, monkeypatch, capsys) == (1, "first bad seq: 345678\n")


def test_agency_window_and_record_queries_return_exactly_their_events(large_log: object, db: Session) -> None:
    scenario = large_log
    start = scenario.start  # type: ignore[attr-defined]
    since, until = start + timedelta(days=100), start + timedelta(days=130)
    items, cursor = service.list_events(
        session=db, agency="BKN", since=since, until=until, limit=100, cursor=None
    )
    assert len(items) == 100 and cursor is not None
    assert all(e["actor"]["agency"] == "BKN" for e in items)
    seqs = [e["seq"] for e in items]
    assert seqs == sorted(seqs, reverse=True)
    record = scenario.popular_record()  # type: ignore[attr-defined]
    touching, _ = service.list_events(session=db, resource_id=record, limit=200, cursor=None)
    assert touching and all(record in e["resource_ids"] for e in touching)
    expected = db.scalar(
        text("SELECT count(*) FROM audit_event_resources WHERE resource_id = :r"), {"r": record}
    )
    assert len(touching) == min(200, expected)
