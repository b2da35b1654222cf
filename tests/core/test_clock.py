"""format_instant's fast path prints exactly what its strftime definition prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from app.clock import format_instant

_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_OFFSETS))
def test_format_instant_is_the_strftime_of_the_utc_instant(value: datetime) -> None:
    assert format_instant(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_format_instant_examples() -> None:
    assert format_instant(datetime(2024, 2, 14, 1, 0, tzinfo=timezone(timedelta(hours=7)))) == \
        "2024-02-13T18:00:00.000000Z"
    assert format_instant(datetime(999, 1, 1, tzinfo=UTC)) == "999-01-01T00:00:00.000000Z"
