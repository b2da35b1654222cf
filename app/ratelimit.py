"""Rate limits (SPEC §3, §12): requests per token, and failed authentications per client address."""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncSlidingWindow
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter as SlidingWindow
from limits.util import WindowStats

from app.config import Settings, SettingsError
from app.errors import RateLimited

log = logging.getLogger("sbt.ratelimit")

KEY_PREFIX = "sbt"
# A shared store that stops answering must not stall every request: short socket timeouts, then the
# limiter stays out of the way (fails open) for a while before it tries the store again.
STORE_TIMEOUT_S = 0.25
STORE_RETRY_AFTER_S = 5.0
# Addresses currently refused for failed authentications, kept in-process so that a refused request
# costs a dictionary lookup: no store round trip, no signature check, no database.
MAX_BLOCKED_ADDRESSES = 100_000


@dataclass(frozen=True)
class Quota:
    """Where a caller stands against a limit, as the RateLimit-* response headers say it."""

    limit: int
    remaining: int
    reset_after: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }


def _parse_limit(name: str, value: str) -> RateLimitItem:
    try:
        return parse(value)
    except ValueError:
        raise SettingsError(f"invalid configuration: SBT_{name.upper()} {value!r} is not a rate limit "
                            "such as `1200/minute`") from None


def _seconds_until(reset_time: float) -> int:
    return max(0, math.ceil(reset_time - time.time()))


class _Store:
    """Hit and read one sliding-window counter, in process memory or in Redis."""

    def __init__(self, uri: str, key_prefix: str) -> None:
        self._pool: Any = None
        self._sync: SlidingWindow | None = None
        self._async: AsyncSlidingWindow | None = None
        self._down_until = 0.0
        if uri.startswith("memory://"):
            # The synchronous memory store never does I/O; its expiry sweep runs in a timer thread at
            # most every 10 ms. (The asyncio variant sweeps every key on every hit, which makes a flood
            # from many addresses cost O(addresses) per request.)
            self._sync = SlidingWindow(storage_from_string(uri))
        elif uri.startswith(("redis://", "rediss://")):
            import redis.asyncio

            self._pool = redis.asyncio.ConnectionPool.from_url(
                uri, socket_timeout=STORE_TIMEOUT_S, socket_connect_timeout=STORE_TIMEOUT_S)
            storage = storage_from_string(f"async+{uri}", implementation="redispy", key_prefix=key_prefix,
                                          connection_pool=self._pool, wrap_exceptions=True)
            self._async = AsyncSlidingWindow(storage)
        else:
            raise SettingsError(f"invalid configuration: SBT_RATE_LIMIT_STORAGE {uri!r} must start with "
                                "memory:// or redis://")

    async def hit(self, item: RateLimitItem, *key: str) -> tuple[bool, WindowStats] | None:
        """Count one hit; (allowed, window) or None when the shared store is unreachable."""
        if self._sync is not None:
            return self._sync.hit(item, *key), self._sync.get_window_stats(item, *key)
        assert self._async is not None
        if time.monotonic() < self._down_until:
            return None
        try:
            allowed = await self._async.hit(item, *key)
            return allowed, await self._async.get_window_stats(item, *key)
        except Exception as exc:  # the store is down: rate limits lapse, requests still get served
            self._down_until = time.monotonic() + STORE_RETRY_AFTER_S
            log.warning("rate-limit store unreachable (%s); limits not enforced for %.0f s",
                        type(exc).__name__, STORE_RETRY_AFTER_S)
            return None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class RateLimiter:
    """Per-token request limit and per-address failed-authentication limit."""

    def __init__(self, *, per_token: str, auth_failures: str, storage: str,
                 key_prefix: str = KEY_PREFIX) -> None:
        self.per_token = _parse_limit("rate_limit", per_token)
        self.auth_failures = _parse_limit("auth_failure_limit", auth_failures)
        self._store = _Store(storage, key_prefix)
        self._blocked: dict[str, float] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, key_prefix: str = KEY_PREFIX) -> RateLimiter:
        return cls(per_token=settings.rate_limit, auth_failures=settings.auth_failure_limit,
                   storage=settings.rate_limit_storage, key_prefix=key_prefix)

    async def hit_token(self, token_id: uuid.UUID) -> Quota | None:
        """Count a request of this token; raise 429 over the limit. None when the store is unreachable."""
        counted = await self._store.hit(self.per_token, "token", str(token_id))
        if counted is None:
            return None
        allowed, window = counted
        quota = Quota(self.per_token.amount, window.remaining, _seconds_until(window.reset_time))
        if not allowed:
            raise RateLimited(
                f"this token is limited to {self.per_token}; retry after the Retry-After delay",
                headers={"Retry-After": str(max(1, quota.reset_after)), **quota.headers()},
            )
        return quota

    def check_address(self, address: str) -> None:
        """429 for an address that failed authentication too often; no I/O, so a flood stays cheap."""
        until = self._blocked.get(address)
        if until is None:
            return
        now = time.monotonic()
        if now >= until:
            self._blocked.pop(address, None)
            return
        retry_after = max(1, math.ceil(until - now))
        raise RateLimited(
            "too many failed authentications from this address; retry after the Retry-After delay",
            headers={"Retry-After": str(retry_after), "RateLimit-Limit": str(self.auth_failures.amount),
                     "RateLimit-Remaining": "0", "RateLimit-Reset": str(retry_after)},
        )

    async def record_auth_failure(self, address: str) -> None:
        """Count a failed authentication; once the limit is used up, the address's next requests are
        refused until the window allows another attempt."""
        counted = await self._store.hit(self.auth_failures, "auth-failure", address)
        if counted is None:
            return
        allowed, window = counted
        if allowed and window.remaining > 0:
            return
        if len(self._blocked) >= MAX_BLOCKED_ADDRESSES:
            now = time.monotonic()
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            if len(self._blocked) >= MAX_BLOCKED_ADDRESSES:
                self._blocked.pop(next(iter(self._blocked)))
        self._blocked[address] = time.monotonic() + max(1, _seconds_until(window.reset_time))

    async def close(self) -> None:
        await self._store.close()
