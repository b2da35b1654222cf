"""Helpers for the violation tests: a valid body, a write token per agency, and records driven to a status."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.clock import today_jakarta
from tests.conftest import TokenFactory, bearer

AGENCIES = ("BAWASLU", "BKN", "KASN", "KEMENDAGRI", "KEMENPANRB")

VALID_BODY: dict[str, Any] = {
    "subject": {
        "nip": "198609262015051001", "name": "Ahmad Fauzi", "employment_type": "PNS",
        "position": "Kepala Bagian Umum", "position_type": "administrator",
        "institution": "Pemerintah Kabupaten Bekasi", "region_code": "32.16",
    },
    "election": {"type": "pilkada", "year": 2024, "stage": "campaign"},
    "category": "social_media_engagement",
    "description": "Membagikan unggahan kampanye pasangan calon nomor urut 2 di Facebook.",
    "occurred_on": "2024-10-05",
    "source": "finding",
    "evidence": [
        {"kind": "url", "uri": "https://www.facebook.com/share/p/abc123", "description": "unggahan"},
        {"kind": "document", "name": "bukti.pdf", "sha256": "a" * 64},
    ],
}


def days_ago(days: int) -> str:
    return (today_jakarta() - timedelta(days=days)).isoformat()


def body_with(changes: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """VALID_BODY with nested changes merged in ({"subject": {"nip": ...}}) and top-level fields set."""
    body = copy.deepcopy(VALID_BODY)
    for key, value in (changes or {}).items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key].update(value)
        else:
            body[key] = value
    body.update(top)
    return body


def recommendation(issued_days_ago: int = 30) -> dict[str, Any]:
    """Issued 30 days ago by default, so follow_up_due_on (14 days later) is already past."""
    return {"sanction": "discipline_medium", "number": "R-100/KN/2024",
            "issued_on": days_ago(issued_days_ago)}


FOLLOW_UP = {"sanction": "discipline_medium", "decree_number": "800/123/BKPSDM", "decided_on": days_ago(2)}

# Valid bodies for each workflow action (dismiss takes `not_proven` unless told otherwise).
ACTION_BODIES: dict[str, dict[str, Any]] = {
    "start_verification": {"action": "start_verification"},
    "recommend": {"action": "recommend", "recommendation": recommendation()},
    "dismiss": {"action": "dismiss", "outcome": "not_proven", "reason": "bukti tidak cukup"},
    "cancel": {"action": "cancel", "reason": "laporan ganda"},
    "record_follow_up": {"action": "record_follow_up", "follow_up": FOLLOW_UP},
    "block_data": {"action": "block_data"},
    "mark_subject_departed": {"action": "mark_subject_departed", "reason": "pensiun"},
}

# How to reach each status from a new record, written out from SPEC §8 (reporter: "R").
PATHS: dict[str, list[tuple[str, str]]] = {
    "reported": [],
    "under_verification": [("BKN", "start_verification")],
    "recommended": [("BKN", "start_verification"), ("BKN", "recommend")],
    "data_blocked": [("BKN", "start_verification"), ("BKN", "recommend"), ("BKN", "block_data")],
    "not_proven": [("BKN", "dismiss")],
    "rejected": [("KASN", "start_verification"), ("KASN", "dismiss:rejected")],
    "cancelled": [("R", "cancel")],
    "sanctioned": [("BKN", "start_verification"), ("BKN", "recommend"), ("KEMENDAGRI", "record_follow_up")],
    "subject_departed": [("BKN", "start_verification"), ("BKN", "mark_subject_departed")],
}


Version = int | str | None


def _if_match(version: int | str) -> str:
    return f'"{version}"' if isinstance(version, int) else version


class Api:
    """The violation endpoints as the agencies call them, one write+read token per agency."""

    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def _sent(self, response: Any) -> Response:
        # TestClient's request methods are typed as returning Any under strict mypy.
        assert isinstance(response, Response)
        return response

    def headers(self, agency: str, **extra: str) -> dict[str, str]:
        return {**bearer(self.tokens[agency]), **extra}

    def create(self, agency: str = "BAWASLU", body: dict[str, Any] | None = None, **headers: str) -> Response:
        return self._sent(self.client.post("/v1/violations", json=body or VALID_BODY,
                                headers=self.headers(agency, **headers)))

    def created(self, agency: str = "BAWASLU", body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.create(agency, body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def get(self, violation_id: str, agency: str = "BKN", **headers: str) -> Response:
        return self._sent(self.client.get(f"/v1/violations/{violation_id}",
                                          headers=self.headers(agency, **headers)))

    def act(self, violation_id: str, agency: str, body: dict[str, Any], version: Version) -> Response:
        """`version`: an int becomes If-Match: "<int>"; a string is sent as it is; None sends none."""
        extra = {} if version is None else {"If-Match": _if_match(version)}
        return self._sent(self.client.post(f"/v1/violations/{violation_id}/actions", json=body,
                                headers=self.headers(agency, **extra)))

    def history(self, violation_id: str, agency: str = "BKN") -> Response:
        return self._sent(self.client.get(f"/v1/violations/{violation_id}/history",
                                          headers=self.headers(agency)))

    def version(self, violation_id: str, n: int, agency: str = "BKN") -> Response:
        return self._sent(self.client.get(f"/v1/violations/{violation_id}/versions/{n}",
                                          headers=self.headers(agency)))

    def patch(self, violation_id: str, agency: str, patch: Any, version: Version,
              content_type: str = "application/merge-patch+json") -> Response:
        extra = {"Content-Type": content_type}
        if version is not None:
            extra["If-Match"] = _if_match(version)
        return self._sent(self.client.patch(f"/v1/violations/{violation_id}", content=json.dumps(patch),
                                 headers=self.headers(agency, **extra)))

    def drive(self, status: str, reporter: str = "BAWASLU") -> dict[str, Any]:
        """A new record (reported by `reporter`) walked to `status` through the API."""
        record = self.created(reporter)
        for agency, step in PATHS[status]:
            action, _, outcome = step.partition(":")
            body = dict(ACTION_BODIES[action], **({"outcome": outcome} if outcome else {}))
            response = self.act(record["id"], reporter if agency == "R" else agency, body, record["version"])
            assert response.status_code == 200, response.text
            record = response.json()
        assert record["status"] == status
        return record


@pytest.fixture
def agency_tokens(issue_token: TokenFactory) -> dict[str, str]:
    return {code: issue_token(code, "violations:read", "violations:write") for code in AGENCIES}


@pytest.fixture
def api(client: TestClient, agency_tokens: dict[str, str]) -> Api:
    return Api(client, agency_tokens)


def count_rows(db: Session, table: str) -> int:
    from app.violations import models

    model = {"violations": models.Violation, "violation_versions": models.ViolationVersion,
             "changes": models.Change, "idempotency_keys": models.IdempotencyKey}[table]
    db.rollback()
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


def field_named(problem: dict[str, Any], *path: str | int) -> bool:
    """True when some error's loc contains `path` in a row (e.g. "subject", "nip")."""
    wanted = list(path)
    return any(loc[i:i + len(wanted)] == wanted
               for loc in (list(e["loc"]) for e in problem.get("errors", []))
               for i in range(len(loc)))
