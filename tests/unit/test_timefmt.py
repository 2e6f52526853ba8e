"""``app.chat.timefmt``: the original protocol's three time formats, exactly."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.chat.timefmt import compact_millis, iso_local, java_local_datetime


@pytest.mark.parametrize("dt, text", [
    (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
    (datetime(2024, 1, 2, 3, 4, 0), "2024-01-02T03:04:00"),
    (datetime(2024, 1, 2, 13, 4, 5, 120_000), "2024-01-02T13:04:05.120"),
    (datetime(2024, 1, 2, 3, 4, 5, 1_000), "2024-01-02T03:04:05.001"),
    (datetime(2024, 1, 2, 3, 4, 5, 123_456), "2024-01-02T03:04:05.123456"),
    (datetime(999, 12, 31, 23, 59, 59), "0999-12-31T23:59:59"),
])
def test_iso_local_always_has_seconds_and_java_fractions(dt, text):
    assert iso_local(dt) == text


@pytest.mark.parametrize("dt, text", [
    (datetime(2024, 1, 2, 3, 4), "2024-01-02T03:04"),
    (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
    (datetime(2024, 1, 2, 3, 4, 0, 5_000), "2024-01-02T03:04:00.005"),
    (datetime(2024, 1, 2, 3, 4, 0, 5), "2024-01-02T03:04:00.000005"),
    (datetime(999, 1, 2, 3, 4), "0999-01-02T03:04"),
])
def test_java_local_datetime_omits_zero_seconds(dt, text):
    assert java_local_datetime(dt) == text


def java_to_string(dt: datetime) -> str:
    """``LocalDateTime.toString()`` spelled out from its Javadoc: ``uuuu-MM-dd'T'HH:mm``, then
    ``:ss`` unless seconds and nanos are zero, then the fraction in 3, 6 or 9 digits, the
    fewest that hold it."""
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}"
    if dt.second == 0 and dt.microsecond == 0:
        return text
    text += f":{dt.second:02d}"
    if dt.microsecond == 0:
        return text
    return text + (f".{dt.microsecond // 1000:03d}" if dt.microsecond % 1000 == 0 else f".{dt.microsecond:06d}")


@given(st.datetimes(), st.sampled_from([0, 1, 1000]))
def test_java_local_datetime_is_java_to_string(dt, unit):
    dt = dt.replace(microsecond=dt.microsecond // unit * unit if unit else 0)
    assert java_local_datetime(dt) == java_to_string(dt)


def test_compact_millis_is_24_hour():
    assert compact_millis(datetime(2024, 1, 2, 15, 4, 5, 67_000)) == "20240102150405067"
