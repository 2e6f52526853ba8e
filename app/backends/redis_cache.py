"""Redis cache of memberships (protocol.md §5) and of small JSON values (author profiles).

Forward keys, byte-compatible with the original server:

- ``R{roomId}``        ``{"members":[5,9]}``   members of a DM room
- ``CH{communityId}``  ``{"members":[5,9]}``   members of a community
- ``CHN{communityId}`` ``{"channels":[12,14]}`` text channels of a community (new)

Reverse indexes, maintained by the setters so nobody has to scan:

- ``CHC{channelId}``   ``"3"``                 community owning a text channel
- ``UR{userId}``       Redis SET of ``community/{id}`` and ``direct/{id}`` entries

A setter overwrites the forward key (fixing W-28: the body always wins) and applies the
difference between the old and the new list to the reverse indexes in the same MULTI/EXEC,
guarded by WATCH on the forward key, so two concurrent overwrites cannot leave an index that
matches neither. Every key written carries the membership TTL, refreshed on each write.
A reverse entry can outlive its forward key by at most one TTL (when the forward key expires
and is later rebuilt from a list that no longer holds a user); callers that need certainty
read the forward key.

Each overwrite also publishes the forward key's name on ``CHANGES_CHANNEL`` in the same
MULTI/EXEC, and :class:`MembershipChanges` delivers those names to a process, so copies
kept in process memory (app/chat/membership.py) are dropped as soon as the list changes.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Iterable, Sequence

import gevent
import redis

import app.metrics as metrics
from app.destinations import membership_entry, parse_membership_entry
from app.errors import BackendUnavailable
from app.logs import RateLimitedLog
from app.settings import Settings

__all__ = ["RedisMembershipCache", "MembershipChanges", "CHANGES_CHANNEL"]

log = logging.getLogger(__name__)

CHANGES_CHANNEL = "smooth:membership-changed"
# Forward key prefix -> the kind of list, as MembershipChanges reports it.
_CHANGE_KINDS = {"R": "room", "CH": "members", "CHN": "channels"}
_FORWARD_KEY = re.compile(r"(R|CH|CHN)([0-9]{1,19})")
_RESUBSCRIBE_S = 1.0

_Pipeline = Any  # redis.client.Pipeline, untyped in redis-py


_SOCKET_TIMEOUT_S = 2.0
# The change feed holds one subscribed connection (and a second while it reconnects).
_FEED_POOL_SIZE = 2
_failures = RateLimitedLog(log)
_DEFAULTS = Settings()

class RedisMembershipCache:
    """``MembershipCache`` on Redis, plus ``get_json``/``set_json`` for other small caches."""

    def __init__(self, redis_url: str, ttl_s: int, *, pool_size: int = _DEFAULTS.redis_pool_size,
                 pool_wait_s: float = _DEFAULTS.backend_pool_wait_s) -> None:
        # A blocking pool: thousands of greenlets may ask at once (a burst of SUBSCRIBEs);
        # redis-py's default pool raises past its size instead of waiting for a connection.
        # Socket timeouts: a Redis that accepts but never answers must fail a request, not hang it.
        pool = redis.BlockingConnectionPool.from_url(redis_url, decode_responses=True,
                                                     max_connections=pool_size, timeout=pool_wait_s,
                                                     socket_timeout=_SOCKET_TIMEOUT_S,
                                                     socket_connect_timeout=_SOCKET_TIMEOUT_S)
        self._redis = redis.Redis(connection_pool=pool)
        self._ttl_s = int(ttl_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> "RedisMembershipCache":
        return cls(settings.redis_url, settings.membership_ttl_s, pool_size=settings.redis_pool_size,
                   pool_wait_s=settings.backend_pool_wait_s)

    def close(self) -> None:
        self._redis.close()

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless Redis answers (readiness check)."""
        self._call(self._redis.ping)

    def server_version(self) -> str:
        """The Redis server's version (``python -m app check``); raises ``BackendUnavailable``."""
        return str(self._call(self._redis.info, "server").get("redis_version", "unknown"))

    # -- forward lists -------------------------------------------------------------------

    def room_members(self, room_id: int) -> list[int] | None:
        return self._read_ids(f"R{room_id}", "members")

    def community_members(self, community_id: int) -> list[int] | None:
        return self._read_ids(f"CH{community_id}", "members")

    def community_channels(self, community_id: int) -> list[int] | None:
        return self._read_ids(f"CHN{community_id}", "channels")

    def set_room_members(self, room_id: int, user_ids: Sequence[int]) -> None:
        self._replace(f"R{room_id}", "members", user_ids, _user_index_updater(membership_entry("direct", room_id), self._ttl_s))

    def set_community_members(self, community_id: int, user_ids: Sequence[int]) -> None:
        self._replace(f"CH{community_id}", "members", user_ids,
                      _user_index_updater(membership_entry("community", community_id), self._ttl_s))

    def set_community_channels(self, community_id: int, channel_ids: Sequence[int]) -> None:
        self._replace(f"CHN{community_id}", "channels", channel_ids,
                      _channel_index_updater(community_id, self._ttl_s))

    # -- reverse indexes -----------------------------------------------------------------

    def channel_community(self, channel_id: int) -> int | None:
        raw = self._call(self._redis.get, f"CHC{channel_id}")
        return int(raw) if raw is not None and raw.isdigit() else None

    def user_rooms(self, user_id: int) -> list[str]:
        entries = self._call(self._redis.smembers, f"UR{user_id}")
        return sorted(entries, key=_room_entry_order)

    # -- small JSON values (profiles) ----------------------------------------------------

    def get_json(self, key: str) -> Any | None:
        return self.get_many_json([key])[0]

    def get_many_json(self, keys: Sequence[str]) -> list[Any | None]:
        """Values in ``keys`` order; None for a missing or unreadable one."""
        if not keys:
            return []
        return [_loads(raw) for raw in self._call(self._redis.mget, list(keys))]

    def set_json(self, key: str, value: Any, ttl_s: int) -> None:
        self.set_many_json({key: value}, ttl_s)

    def set_many_json(self, values: dict[str, Any], ttl_s: int) -> None:
        if not values:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, _dumps(value), ex=int(ttl_s))
        self._call(pipe.execute)

    # -- internals -----------------------------------------------------------------------

    def _read_ids(self, key: str, field: str) -> list[int] | None:
        return _ids_from_raw(self._call(self._redis.get, key), field)

    def _replace(self, key: str, field: str, new_ids: Sequence[int],
                 update_indexes: Callable[[_Pipeline, list[int], list[int]], None]) -> None:
        wanted = _unique_ids(new_ids)
        value = _dumps({field: wanted})

        def overwrite(pipe: _Pipeline) -> None:
            # Between WATCH and EXEC the pipeline runs commands immediately (reads).
            old = _ids_from_raw(pipe.get(key), field) or []
            pipe.multi()
            pipe.set(key, value, ex=self._ttl_s)
            update_indexes(pipe, old, wanted)
            pipe.publish(CHANGES_CHANNEL, key)

        # redis-py retries the whole function if the watched key changed before EXEC.
        self._call(self._redis.transaction, overwrite, key)

    def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Every call of the cache goes through here: timed for the metrics (by the client
        method's name: get, mget, execute for a pipeline...), failures mapped."""
        try:
            with metrics.backend_timed("redis", func.__name__):
                return func(*args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            _failures.warning("redis cache unavailable: %s", exc)
            raise BackendUnavailable("cache unavailable") from None


class MembershipChanges:
    """Tells this process which member/channel lists changed, from any process's overwrite.

    One greenlet subscribed to ``CHANGES_CHANNEL`` calls ``on_change(kind, id)`` (kind is
    ``room``, ``members`` or ``channels``) per overwrite. While it is not subscribed, changes
    are missed, so after every (re)subscription it calls ``on_gap()`` first: whoever keeps
    copies must then drop them all. Reconnects every ``_RESUBSCRIBE_S`` while Redis is down.
    """

    def __init__(self, redis_url: str, on_change: Callable[[str, int], None], on_gap: Callable[[], None]) -> None:
        # No socket timeout: a quiet channel is normal. Keep-alive notices a dead peer.
        pool = redis.BlockingConnectionPool.from_url(redis_url, decode_responses=True, socket_keepalive=True,
                                                     socket_connect_timeout=_SOCKET_TIMEOUT_S,
                                                     max_connections=_FEED_POOL_SIZE, timeout=_SOCKET_TIMEOUT_S)
        self._redis = redis.Redis(connection_pool=pool)
        self._on_change = on_change
        self._on_gap = on_gap
        self._greenlet: gevent.Greenlet | None = None
        self.subscribed = False

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "membership-changes"

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
        self._redis.close()

    def _run(self) -> None:
        while True:
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                log.warning("membership change feed lost (%s); resubscribing", type(exc).__name__)
            self.subscribed = False
            self._on_gap()
            gevent.sleep(_RESUBSCRIBE_S)

    def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANGES_CHANNEL)
            self._on_gap()  # whatever changed before this subscription is unknown
            self.subscribed = True
            for message in pubsub.listen():
                self._dispatch(message.get("data"))
        finally:
            pubsub.close()

    def _dispatch(self, key: Any) -> None:
        match = _FORWARD_KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            return
        try:
            self._on_change(_CHANGE_KINDS[match.group(1)], int(match.group(2)))
        except Exception:  # noqa: BLE001 - one bad callback must not end the feed
            log.exception("membership change callback failed")


def _user_index_updater(entry: str, ttl_s: int) -> Callable[[_Pipeline, list[int], list[int]], None]:
    """Keeps ``UR{user}`` in step with a member list whose entry is ``entry``."""

    def update(pipe: _Pipeline, old: list[int], new: list[int]) -> None:
        for user_id in set(old) - set(new):
            pipe.srem(f"UR{user_id}", entry)
        # Every current member's index is touched so it lives as long as this list.
        for user_id in new:
            pipe.sadd(f"UR{user_id}", entry)
            pipe.expire(f"UR{user_id}", ttl_s)

    return update


def _channel_index_updater(community_id: int, ttl_s: int) -> Callable[[_Pipeline, list[int], list[int]], None]:
    """Keeps ``CHC{channel}`` pointing at the community that lists the channel."""

    def update(pipe: _Pipeline, old: list[int], new: list[int]) -> None:
        for channel_id in set(old) - set(new):
            pipe.delete(f"CHC{channel_id}")
        for channel_id in new:
            pipe.set(f"CHC{channel_id}", str(community_id), ex=ttl_s)

    return update


def _unique_ids(ids: Iterable[int]) -> list[int]:
    seen: dict[int, None] = {}
    for value in ids:
        seen.setdefault(int(value), None)
    return list(seen)


def _ids_from_raw(raw: str | None, field: str) -> list[int] | None:
    data = _loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        return None
    ids = data[field]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
        return None
    return list(ids)


def _room_entry_order(entry: str) -> tuple[int, int]:
    parsed = parse_membership_entry(entry)
    kind, number = parsed if parsed is not None else (entry.partition("/")[0], 0)
    # Communities first, then DM rooms, as the original room-list endpoint answers.
    return (0 if kind == "community" else 1, number)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(raw: str | None) -> Any | None:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
