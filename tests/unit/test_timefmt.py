"""``app.chat.timefmt``: the original protocol's three time formats, exactly."""

from __future__ import annotations

from datetime import datetime

import pytest

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
])
def test_java_local_datetime_omits_zero_seconds(dt, text):
    assert java_local_datetime(dt) == text


def test_compact_millis_is_24_hour():
    assert compact_millis(datetime(2024, 1, 2, 15, 4, 5, 67_000)) == "20240102150405067"
