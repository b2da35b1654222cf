"""The change feed: `after`/`next_after` paging; exactly-once, in-order delivery under concurrent writers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.violations.models import ViolationVersion
from tests.conftest import audit_rows
from tests.violations.conftest import ACTION_BODIES, Api, field_named


def _feed(api: Api, after: int | None = None, limit: int | None = None) -> dict[str, Any]:
    params = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
    response = api.client.get("/v1/changes", params=params, headers=api.headers("KEMENPANRB"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_version_appears_once_with_next_after(api: Api, db: Session) -> None:
    empty = _feed(api)
    assert empty == {"items": [], "next_after": 0}
    assert _feed(api, after=7) == {"items": [], "next_after": 7}  # an empty page echoes `after`
    first = api.drive("recommended")
    second = api.created("KEMENDAGRI")
    page = _feed(api)
    assert [(c["violation_id"], c["version"], c["action"], c["agency"]) for c in page["items"]] == [
        (first["id"], 1, "create", "BAWASLU"), (first["id"], 2, "start_verification", "BKN"),
        (first["id"], 3, "recommend", "BKN"), (second["id"], 1, "create", "KEMENDAGRI")]
    assert [c["seq"] for c in page["items"]] == [1, 2, 3, 4] and page["next_after"] == 4
    assert page["items"][2]["changed_at"] == first["updated_at"]
    two = _feed(api, after=1, limit=2)
    assert [c["seq"] for c in two["items"]] == [2, 3] and two["next_after"] == 3
    assert _feed(api, after=4) == {"items": [], "next_after": 4}
    event = audit_rows(db)[-1]
    assert (event.action, event.detail) == ("changes.read", {"after": 4, "next_after": 4})
    _feed(api, after=1, limit=2)
    event = audit_rows(db)[-1]
    assert event.resource_type == "violation" and event.resource_ids == [first["id"]]
    _feed(api)
    assert audit_rows(db)[-1].resource_ids == [first["id"], second["id"]]


def test_failed_writes_leave_no_feed_entry(api: Api) -> None:
    record = api.created()
    api.act(record["id"], "BKN", ACTION_BODIES["block_data"], 1)  # 409
    api.patch(record["id"], "BAWASLU", {"description": "x"}, 9)  # 412
    api.create("BAWASLU", {"category": "x"})  # 422
    assert [c["seq"] for c in _feed(api)["items"]] == [1]


@pytest.mark.parametrize("query", ["after=-1", "after=x", f"after={2**63}", "limit=0", "limit=201"])
def test_bad_feed_parameters_are_422(api: Api, query: str) -> None:
    response = api.client.get(f"/v1/changes?{query}", headers=api.headers("BKN"))
    assert response.status_code == 422 and field_named(response.json(), query.split("=")[0])


def test_a_poller_sees_every_committed_change_once_and_in_order_under_concurrent_writers(
    api: Api, client: TestClient, db: Session
) -> None:
    writers, per_writer = 4, 6
    done = threading.Event()
    seen: list[dict[str, Any]] = []
    errors: list[str] = []

    def write(n: int) -> None:
        agency = ("BAWASLU", "KEMENDAGRI", "KEMENPANRB", "BKN")[n]
        for i in range(per_writer):
            record = api.created(agency)
            if i % 2 == 0:
                response = api.act(record["id"], "BKN", ACTION_BODIES["start_verification"], 1)
                if response.status_code != 200:
                    errors.append(response.text)

    def poll() -> None:
        after = 0
        while True:
            finished = done.is_set()  # read before polling, so the last poll starts after every commit
            page = _feed(api, after=after, limit=7)
            seen.extend(page["items"])
            after = page["next_after"]
            if finished and not page["items"]:
                return

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    poller.join()
    assert not errors
    db.rollback()
    committed = {(str(v.violation_id), v.version) for v in db.scalars(select(ViolationVersion))}
    delivered = [(c["violation_id"], c["version"]) for c in seen]
    assert len(committed) == writers * per_writer * 3 // 2
    assert len(delivered) == len(set(delivered)), "a change was delivered twice"
    assert set(delivered) == committed, "a committed change was skipped"
    seqs = [c["seq"] for c in seen]
    assert seqs == list(range(1, len(seqs) + 1)), "the feed is in commit order without gaps"
    versions: dict[str, int] = {}
    for violation_id, version in delivered:  # each record's versions arrive in order
        assert version == versions.get(violation_id, 0) + 1
        versions[violation_id] = version
