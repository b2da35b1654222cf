"""Rate limits: requests per token, failed authentications per address, in memory and in Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from app.config import Settings, SettingsError
from app.ratelimit import RateLimiter
from app.runtime import Runtime
from tests.conftest import TokenFactory, audit_rows, bearer
from tests.hardening.conftest import CallCounter, problem, redis_runtime, serve

# Windows of a day keep these tests clear of a window boundary (a minute window could roll over mid-test).
THREE_A_DAY = "3/day"


def retry_after(response: object) -> int:
    value = response.headers["retry-after"]  # type: ignore[attr-defined]
    assert value.isdigit(), value
    assert int(value) >= 1
    return int(value)


def test_a_token_over_its_limit_gets_429_with_retry_after_and_ratelimit_headers(
    make_settings: Callable[..., Settings], issue_token: TokenFactory, db: Session
) -> None:
    token = issue_token("BKN", "violations:read")
    with serve(make_settings(rate_limit=THREE_A_DAY)) as client:
        remaining = []
        for _ in range(3):
            ok = client.get("/v1/agencies", headers=bearer(token))
            assert ok.status_code == 200
            assert ok.headers["ratelimit-limit"] == "3"
            remaining.append(int(ok.headers["ratelimit-remaining"]))
            assert int(ok.headers["ratelimit-reset"]) >= 0
        assert remaining == [2, 1, 0]
        refused = client.get("/v1/agencies", headers=bearer(token))
    body = problem(refused, 429, "rate_limited")
    assert "items" not in body
    retry_after(refused)
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    events = [e for e in audit_rows(db) if e.action == "agency.list"]
    assert [(e.status_code, e.outcome) for e in events] == [(200, "success")] * 3 + [(429, "denied")]
    assert events[-1].actor_token_id is not None
    assert events[-1].resource_ids == []


def test_ratelimit_headers_ride_on_the_routes_refusals_too(
    make_settings: Callable[..., Settings], issue_token: TokenFactory
) -> None:
    admin = issue_token("BKN", "admin")
    with serve(make_settings(rate_limit="10/day")) as client:
        answers = [
            client.get(f"/v1/tokens/{uuid.uuid4()}", headers=bearer(admin)),  # the route's 404
            client.get("/v1/tokens", params={"limit": 0}, headers=bearer(admin)),  # FastAPI's 422
            client.get("/v1/tokens", params={"agncy": "BKN"}, headers=bearer(admin)),  # screening 422
            client.post("/v1/agencies", content=b"{",
                        headers={**bearer(admin), "Content-Type": "text/plain"}),  # screening 415
        ]
    assert [a.status_code for a in answers] == [404, 422, 422, 415]
    remaining = [a.headers.get("ratelimit-remaining") for a in answers]
    assert remaining[0] == "9" and remaining[2:] == ["7", "6"]


def test_the_limit_is_per_token(make_settings: Callable[..., Settings], issue_token: TokenFactory) -> None:
    busy, other = issue_token("BKN", "violations:read"), issue_token("BKN", "violations:read")
    with serve(make_settings(rate_limit="1/day")) as client:
        assert client.get("/v1/agencies", headers=bearer(busy)).status_code == 200
        problem(client.get("/v1/agencies", headers=bearer(busy)), 429, "rate_limited")
        assert client.get("/v1/agencies", headers=bearer(other)).status_code == 200


def test_429_ranks_after_401_and_403_and_before_413(
    make_settings: Callable[..., Settings], issue_token: TokenFactory
) -> None:
    reader = issue_token("BKN", "violations:read")
    admin = issue_token("BKN", "admin")
    settings = make_settings(rate_limit="1/day", max_body_bytes=1024)
    with serve(settings) as client:
        assert client.get("/v1/agencies", headers=bearer(reader)).status_code == 200
        assert client.get("/v1/agencies", headers=bearer(admin)).status_code == 200
        # reader is over its limit, but lacks the admin scope: 403 outranks 429
        problem(client.post("/v1/agencies", json={"code": "DKPP", "name": "x"}, headers=bearer(reader)),
                403, "insufficient_scope")
        # admin is over its limit and sends too large a body: 429 outranks 413
        big = {"code": "DKPP", "name": "x" * 5000}
        problem(client.post("/v1/agencies", json=big, headers=bearer(admin)), 429, "rate_limited")
        problem(client.get("/v1/agencies", headers=bearer(reader + "x")), 401, "invalid_token")


def test_an_address_that_fails_authentication_too_often_gets_429_before_any_verification(
    make_settings: Callable[..., Settings], issue_token: TokenFactory, db: Session
) -> None:
    valid = issue_token("BKN", "violations:read")
    settings = make_settings(auth_failure_limit=THREE_A_DAY)
    runtime = Runtime.build(settings)
    verify = CallCounter(runtime.codec.verify)
    runtime.codec.verify = verify  # type: ignore[method-assign]
    sessions = CallCounter(runtime.sessions)
    runtime.sessions = sessions  # type: ignore[assignment]
    with serve(settings, runtime=runtime, address="203.0.113.7") as client:
        for bad in ("Bearer nonsense", "Basic Zm9vOmJhcg==", "Bearer a.b.c"):
            problem(client.get("/v1/agencies", headers={"Authorization": bad}), 401, "invalid_token")
        verified, opened = verify.calls, sessions.calls
        refused = client.get("/v1/agencies", headers=bearer(valid))
        problem(refused, 429, "rate_limited")
        retry_after(refused)
        problem(client.get("/v1/agencies"), 429, "rate_limited")
        # Refused on the address alone: no signature check, no database session for the principal.
        assert (verify.calls, sessions.calls) == (verified, opened)
    with serve(settings, runtime=Runtime.build(settings), address="198.51.100.9") as elsewhere:
        assert elsewhere.get("/v1/agencies", headers=bearer(valid)).status_code == 200
    events = [e for e in audit_rows(db) if e.path == "/v1/agencies"]
    assert [(e.status_code, e.outcome) for e in events] == [(401, "denied")] * 3 + [(429, "denied")] * 2 + [
        (200, "success")]
    assert all(e.actor_kind == "anonymous" for e in events[:5])
    assert events[3].client_ip == "203.0.113.7"
    assert events[3].detail == {"reason": "too many failed authentications from this address"}


def test_successful_authentications_do_not_count_towards_the_failure_limit(
    make_settings: Callable[..., Settings], issue_token: TokenFactory
) -> None:
    valid = issue_token("BKN", "violations:read")
    with serve(make_settings(auth_failure_limit="2/day")) as client:
        for _ in range(5):
            assert client.get("/v1/agencies", headers=bearer(valid)).status_code == 200
        problem(client.get("/v1/agencies"), 401, "invalid_token")
        assert client.get("/v1/agencies", headers=bearer(valid)).status_code == 200


def test_unknown_paths_count_against_the_token_limit_too(
    make_settings: Callable[..., Settings], issue_token: TokenFactory
) -> None:
    token = issue_token("BKN", "violations:read")
    with serve(make_settings(rate_limit="1/day")) as client:
        problem(client.get("/v1/nowhere", headers=bearer(token)), 404, "not_found")
        problem(client.get("/v1/nowhere", headers=bearer(token)), 429, "rate_limited")


def test_redis_storage_shares_the_token_limit_between_instances(
    make_settings: Callable[..., Settings], issue_token: TokenFactory, redis_prefix: str
) -> None:
    token = issue_token("BKN", "violations:read")
    settings = make_settings(rate_limit="4/day", rate_limit_storage="redis://127.0.0.1:6379")
    with serve(settings, runtime=redis_runtime(settings, redis_prefix)) as first, \
            serve(settings, runtime=redis_runtime(settings, redis_prefix)) as second:
        for client in (first, second, first, second):
            assert client.get("/v1/agencies", headers=bearer(token)).status_code == 200
        problem(second.get("/v1/agencies", headers=bearer(token)), 429, "rate_limited")
        problem(first.get("/v1/agencies", headers=bearer(token)), 429, "rate_limited")


def test_redis_storage_shares_failed_authentications_between_instances(
    make_settings: Callable[..., Settings], issue_token: TokenFactory, redis_prefix: str
) -> None:
    valid = issue_token("BKN", "violations:read")
    settings = make_settings(auth_failure_limit=THREE_A_DAY, rate_limit_storage="redis://127.0.0.1:6379")
    address = "192.0.2.44"
    with serve(settings, runtime=redis_runtime(settings, redis_prefix), address=address) as first, \
            serve(settings, runtime=redis_runtime(settings, redis_prefix), address=address) as second:
        problem(first.get("/v1/agencies"), 401, "invalid_token")
        problem(first.get("/v1/agencies"), 401, "invalid_token")
        problem(second.get("/v1/agencies"), 401, "invalid_token")
        problem(second.get("/v1/agencies", headers=bearer(valid)), 429, "rate_limited")


def test_an_unreachable_redis_lets_requests_through_rather_than_failing_them(
    make_settings: Callable[..., Settings], issue_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    token = issue_token("BKN", "violations:read")
    # Nothing listens on this port (inside this suite's own range, 18100-18199).
    settings = make_settings(rate_limit="1/day", rate_limit_storage="redis://127.0.0.1:18199")
    with serve(settings) as client:
        for _ in range(3):
            response = client.get("/v1/agencies", headers=bearer(token))
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
    assert "rate-limit store unreachable" in caplog.text


@pytest.mark.parametrize("field, value", [("rate_limit", "lots"), ("auth_failure_limit", "3 per fortnight")])
def test_a_malformed_rate_is_refused_with_the_settings(field: str, value: str) -> None:
    # Refused when the settings are read, before anything starts (tests/test_config.py checks the message
    # names the variable).
    with pytest.raises(ValueError, match="is not a rate such as 1200/minute"):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_an_unknown_rate_limit_store_stops_start_up_with_a_clear_message() -> None:
    settings = Settings(rate_limit_storage="memcached://127.0.0.1:11211")
    with pytest.raises(SettingsError, match=r"SBT_RATE_LIMIT"):
        RateLimiter.from_settings(settings)
