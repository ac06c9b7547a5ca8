"""The one timestamp format: ISO 8601 UTC with a Z, from datetimes in any zone and from Unix seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from catdog.timefmt import iso_utc, iso_utc_or_none

KOLKATA = timezone(timedelta(hours=5, minutes=30))
MOMENT = datetime(2026, 12, 7, 21, 58, 29, 987654, tzinfo=UTC)


def test_whole_seconds_by_default_with_a_z() -> None:
    assert iso_utc(MOMENT) == "2026-12-07T21:58:29Z"
    assert iso_utc(MOMENT, "milliseconds") == "2026-12-07T21:58:29.987Z"  # truncated, never rounded up
    assert iso_utc(MOMENT, "microseconds") == "2026-12-07T21:58:29.987654Z"


def test_any_zone_and_unix_seconds_come_out_in_utc() -> None:
    assert iso_utc(MOMENT.astimezone(KOLKATA)) == "2026-12-07T21:58:29Z"
    assert iso_utc(MOMENT.timestamp()) == "2026-12-07T21:58:29Z"
    assert iso_utc(0) == "1970-01-01T00:00:00Z"


def test_now_and_none() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    now = iso_utc()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", now)
    assert before <= datetime.fromisoformat(now) <= datetime.now(UTC)
    assert iso_utc_or_none(None) is None
    assert iso_utc_or_none(MOMENT, "milliseconds") == "2026-12-07T21:58:29.987Z"


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        iso_utc(datetime(2026, 12, 7, 21, 58, 29))
