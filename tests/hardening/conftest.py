"""Helpers for the hardening tests: apps with changed settings, spies on the expensive steps."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.ratelimit import RateLimiter
from app.runtime import Runtime

REDIS_URL = "redis://127.0.0.1:6379"


@contextmanager
def serve(settings: Settings, *, runtime: Runtime | None = None,
          address: str = "testclient") -> Iterator[TestClient]:
    """A TestClient on a fresh app; `address` is the client address the app sees."""
    app = create_app(settings, runtime)
    with TestClient(app, raise_server_exceptions=False, client=(address, 50000)) as client:
        yield client


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert a problem+json answer with this status and code; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status, body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


class CallCounter:
    """Wraps a callable and counts how often it is called."""

    def __init__(self, target: Callable[..., Any]) -> None:
        self.target = target
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.target(*args, **kwargs)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the local Redis, removed afterwards."""
    prefix = f"sbt-test-{uuid.uuid4().hex}"
    yield prefix
    connection = redis.Redis.from_url(REDIS_URL)
    keys = list(connection.scan_iter(match=f"{prefix}:*"))
    if keys:
        connection.delete(*keys)
    connection.close()


def redis_runtime(settings: Settings, prefix: str) -> Runtime:
    """A runtime whose limiter counts in the local Redis under `prefix` (as several instances would)."""
    runtime = Runtime.build(settings)
    runtime.extras["rate_limiter"] = RateLimiter.from_settings(settings, key_prefix=prefix)
    return runtime
