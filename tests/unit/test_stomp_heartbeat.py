"""Tests of the pure heart-beat helpers (app.stomp.heartbeat)."""

from __future__ import annotations

import pytest

from app.errors import InvalidFrame
from app.stomp.heartbeat import is_overdue, negotiate_heartbeat, parse_heart_beat


class TestParseHeartBeat:
    """STOMP 1.2 "Heart-beating": the header is two comma-separated millisecond counts."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, (0, 0)),
            ("0,0", (0, 0)),
            ("10000,10000", (10000, 10000)),
            ("0,5000", (0, 5000)),
            ("4000, 4000", (4000, 4000)),
            ("007,08", (7, 8)),
        ],
    )
    def test_valid(self, value: str | None, expected: tuple[int, int]) -> None:
        assert parse_heart_beat(value) == expected

    @pytest.mark.parametrize(
        "value", ["", "1000", "1,2,3", "-1,0", "a,b", "1.5,2", ",", "1,", "+1,1", "1_000,1", "١,1", "9" * 13 + ",0"]
    )
    def test_malformed(self, value: str) -> None:
        with pytest.raises(InvalidFrame, match="heart-beat"):
            parse_heart_beat(value)


class TestNegotiateHeartbeat:
    """STOMP 1.2 "Heart-beating": each direction is max of the two sides, or 0 if either is 0."""

    @pytest.mark.parametrize(
        ("client", "server", "expected"),
        [
            ((0, 0), (10000, 10000), (0, 0)),
            ((10000, 10000), (0, 0), (0, 0)),
            ((4000, 6000), (10000, 10000), (10000, 10000)),
            ((20000, 30000), (10000, 10000), (30000, 20000)),
            ((0, 5000), (10000, 10000), (10000, 0)),  # client sends none: nothing expected
            ((5000, 0), (10000, 10000), (0, 10000)),  # client wants none: server sends none
            ((5000, 5000), (10000, 0), (10000, 0)),  # server expects none
            ((5000, 5000), (0, 10000), (0, 10000)),  # server sends none
            ((1, 1), (1, 1), (1, 1)),
        ],
    )
    def test_negotiate(self, client: tuple[int, int], server: tuple[int, int], expected: tuple[int, int]) -> None:
        assert negotiate_heartbeat(client, server) == expected


class TestIsOverdue:
    """STOMP 1.2 "Heart-beating": silence beyond the agreed interval, with tolerance."""

    @pytest.mark.parametrize(
        ("last_activity", "now", "expect_ms", "tolerance", "overdue"),
        [
            (100.0, 119.9, 10000, 2.0, False),
            (100.0, 120.0, 10000, 2.0, False),  # exactly at the deadline is still on time
            (100.0, 120.1, 10000, 2.0, True),
            (100.0, 1e9, 0, 2.0, False),  # heart-beats off: never overdue
            (100.0, 115.1, 10000, 1.5, True),
            (100.0, 114.9, 10000, 1.5, False),
            (100.0, 99.0, 10000, 2.0, False),  # a clock that went backwards is not silence
        ],
    )
    def test_is_overdue(
        self, last_activity: float, now: float, expect_ms: int, tolerance: float, overdue: bool
    ) -> None:
        assert is_overdue(last_activity, now, expect_ms, tolerance) is overdue

    def test_default_tolerance_is_two_intervals(self) -> None:
        assert not is_overdue(0.0, 2.0, 1000)
        assert is_overdue(0.0, 2.001, 1000)
