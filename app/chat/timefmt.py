"""Timestamp formats of the original wire protocol (protocol.md §2.7, §4.4).

All times are naive UTC. Live message/reply/modify pushes use Java's
``LocalDateTime.toString()``; file pushes and HTTP history use ISO-8601 with seconds
always present; message-count uses ``yyyyMMddHHmmssSSS`` (24-hour, fixing the
original's 12-hour ``hh``).
"""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["utcnow", "java_local_datetime", "iso_local", "compact_millis"]


def utcnow() -> datetime:
    """Now as naive UTC, truncated to milliseconds (what MongoDB stores)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def java_local_datetime(dt: datetime) -> str:
    """``LocalDateTime.toString()``: ``iso_local``, with the seconds omitted when seconds and
    fraction are both zero. (One per live push: ``isoformat`` costs a third of ``strftime``.)"""
    if dt.second == 0 and dt.microsecond == 0:
        return dt.isoformat(timespec="minutes")
    return iso_local(dt)


def iso_local(dt: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ss[.fraction]``, seconds always present (fifty per history page:
    ``isoformat`` is several times cheaper than ``strftime`` and pads years to four digits,
    as Java does)."""
    if dt.microsecond and dt.microsecond % 1000 == 0:
        return dt.isoformat(timespec="milliseconds")
    return dt.isoformat()


def compact_millis(dt: datetime) -> str:
    """``yyyyMMddHHmmssSSS`` (24-hour)."""
    return dt.strftime("%Y%m%d%H%M%S") + f"{dt.microsecond // 1000:03d}"
