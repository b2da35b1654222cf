"""Time in one place: UTC instants for timestamps, the Asia/Jakarta calendar date for date rules."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

JAKARTA = ZoneInfo("Asia/Jakarta")


def utcnow() -> datetime:
    return datetime.now(UTC)


def today_jakarta() -> date:
    return datetime.now(JAKARTA).date()


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with `Z` and always six fractional digits, so a stored instant prints one way.

    Exactly `strftime("%Y-%m-%dT%H:%M:%S.%fZ")` of the UTC instant; isoformat gives the same text several
    times faster, except that %Y has no zero padding before the year 1000."""
    instant = value.astimezone(UTC)
    if instant.year >= 1000:
        return instant.isoformat(timespec="microseconds")[:-6] + "Z"
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
