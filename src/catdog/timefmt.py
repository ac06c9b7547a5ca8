"""The one timestamp format: ISO 8601 in UTC with a "Z", for every time catdog answers or writes.

"2026-12-07T21:58:29Z" (timespec "seconds", the default), or "2026-12-07T21:58:29.123Z"
("milliseconds": a prediction's `timestamp`). Never "+00:00", never local time. Browsers'
`new Date(...)` and Python's `datetime.fromisoformat` read it as it is.

Imports nothing from catdog: the ML core, the database, the registry, the jobs and the web layer
all use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Timespec = Literal["seconds", "milliseconds", "microseconds"]


def iso_utc(moment: datetime | float | None = None, timespec: Timespec = "seconds") -> str:
    """`moment` as ISO 8601 UTC with a Z: "2026-12-07T21:58:29Z".

    moment: a timezone-aware datetime (any zone; converted to UTC), Unix seconds (float), or None
    for now. timespec: "seconds", "milliseconds" or "microseconds" (truncated, never rounded up).
    Raises ValueError for a naive datetime (catdog never guesses a time zone).
    """
    if moment is None:
        moment = datetime.now(UTC)
    elif not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(float(moment), UTC)
    elif moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass a timezone-aware datetime (UTC)")
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_utc_or_none(moment: datetime | None, timespec: Timespec = "seconds") -> str | None:
    """`iso_utc(moment)`, or None for None (a time not reached yet: a job's `finished_at`)."""
    return None if moment is None else iso_utc(moment, timespec)
