"""`sbt demo seed`: realistic cases that went through the real workflow, with history, feed and audit."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.audit.models import AuditEvent
from app.cli import cli_event
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.violations import demo
from app.violations.models import Change, Violation, ViolationVersion
from app.violations.schemas import ViolationCreate
from app.violations.workflow import Category, Status


def test_seeded_cases_have_true_histories_feed_entries_and_cli_audit_events(
    settings: Settings, db: Session
) -> None:
    engine = make_engine(settings.database_url, pool_size=2)
    reached = demo.seed(make_session_factory(engine), cases=40, follow_up_days=14, event=cli_event, seed=7)
    engine.dispose()
    assert sum(reached.values()) == 40 and set(reached) <= {s.value for s in Status}
    db.rollback()
    records = list(db.scalars(select(Violation)))
    assert Counter(r.status for r in records) == reached
    versions = list(db.scalars(select(ViolationVersion).order_by(ViolationVersion.violation_id,
                                                                 ViolationVersion.version)))
    by_record: dict[object, list[ViolationVersion]] = {}
    for version in versions:
        by_record.setdefault(version.violation_id, []).append(version)
    for record in records:
        history = by_record[record.id]
        assert [v.version for v in history] == list(range(1, record.version + 1))
        assert history[0].action == "create" and history[0].agency == record.reporting_agency
        assert history[-1].document["status"] == record.status
        assert all(v.token_id is None for v in history)
    feed = list(db.scalars(select(Change).order_by(Change.seq)))
    assert [c.seq for c in feed] == list(range(1, len(versions) + 1))
    assert {(c.violation_id, c.version) for c in feed} == {(v.violation_id, v.version) for v in versions}
    events = list(db.scalars(select(AuditEvent).where(AuditEvent.actor_kind == "cli",
                                                      AuditEvent.action.like("violation.%"))))
    assert len(events) == len(versions)
    assert all(e.outcome == "success" and e.method is None and e.detail["demo"] is True for e in events)
    assert audit_service.verify(db).ok


def test_cases_are_plausible_and_follow_the_domain_proportions() -> None:
    factory = demo.CaseFactory(random.Random(1), date(2026, 11, 22))
    cases = [factory.case() for _ in range(2000)]
    for case in cases[:200]:
        ViolationCreate.model_validate(case.body)  # every generated body passes the API's validation
    categories = Counter(case.body["category"] for case in cases)
    share = {c: categories[c.value] / len(cases) for c in Category}
    assert 0.26 < share[Category.SOCIAL_MEDIA_ENGAGEMENT] < 0.35
    assert 0.18 < share[Category.PARTISAN_EVENT] < 0.27
    assert 0.10 < share[Category.PARTISAN_PHOTO] < 0.16
    assert 0.08 < share[Category.CAMPAIGN_ATTENDANCE] < 0.14
    assert all(share[c] > 0 for c in Category)
    statuses = Counter(case.status for case in cases)
    awaiting_verification = statuses[Status.REPORTED] + statuses[Status.UNDER_VERIFICATION]
    assert 0.48 < awaiting_verification / len(cases) < 0.60  # 667 of 1,233 in Pilkada 2024
    assert statuses[Status.SANCTIONED] < statuses[Status.REJECTED] < statuses[Status.RECOMMENDED]
    provinces = {case.body["subject"]["region_code"][:2] for case in cases}
    assert len(provinces) >= 30
    assert any(case.body["subject"]["institution"] == "Pemerintah Kabupaten Bekasi" for case in cases)


def test_the_same_seed_gives_the_same_cases() -> None:
    def bodies(seed: int) -> list[dict[str, object]]:
        factory = demo.CaseFactory(random.Random(seed), date(2026, 1, 1))
        return [factory.case().body for _ in range(5)]

    assert bodies(5) == bodies(5) and bodies(5) != bodies(6)


def test_the_cli_command(settings: Settings, db: Session, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBT_")}
    env.update(SBT_DATABASE_URL=settings.database_url, SBT_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "app.cli", "demo", "seed", "--cases", "3", "--seed", "11"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "seeded 3 demo cases" in done.stderr and done.stdout == ""
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Violation)) == 3
    for cases in ("0", "100001"):
        refused = subprocess.run([sys.executable, "-m", "app.cli", "demo", "seed", "--cases", cases],
                                 env=env, capture_output=True, text=True, timeout=120, check=False)
        assert (refused.returncode, refused.stdout) == (2, "")
        assert "--cases must be from 1 to 100,000" in refused.stderr
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Violation)) == 3
