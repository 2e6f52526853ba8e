"""Who belongs where: DM room members, community members and a community's text channels.

The cache (``MembershipCache``, Redis in production) is read first. On a miss:

- with a community service (``settings.community_service_url``), the list is fetched from
  it (protocol.md §6.4) and cached for ``settings.membership_ttl_s``;
- without one, the membership PUT endpoints are the only source of truth, so an unknown
  room, community or channel has no members (nobody is let in).

A 4xx answer or ``isSuccess: false`` from the community service means "no such room" and
gives an empty list that is not cached (the next call asks again). A service that is down
raises ``BackendUnavailable``: refusing is safer than guessing who is a member.

``user_rooms`` is the list used for connect/disconnect pushes; it asks the community
service when there is one (as the original did on every CONNECT) and falls back to the
cache's reverse index when there is none or it is down.

In front of the shared cache, each process keeps the lists it read for
``settings.membership_local_ttl_s`` (:class:`LocalLists`): every SEND checks membership, and
one Redis round trip per SEND was the largest cost of a SEND (bench/FINDINGS.md, many rooms).
A copy is dropped as soon as the list changes: a PUT handled by this process drops it at
once, and every process hears of every overwrite through the cache's change feed
(``list_changed``; ``forget_all`` after a gap in the feed). The TTL only bounds how long a
change that bypassed the feed (a hand edit in Redis) stays unseen.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from app.chat.ports import MembershipCache, ServiceClient
from app.destinations import parse_id, parse_membership_entry
from app.errors import BackendError, BackendUnavailable, ServiceRefused
from app.settings import Settings

__all__ = ["Membership", "LocalLists", "MEMBER_SETS_MAX"]

log = logging.getLogger(__name__)

Key = tuple[str, int]
# Communities whose member sets one process keeps (past it they are rebuilt as needed).
MEMBER_SETS_MAX = 10_000


class LocalLists:
    """Lists read from the shared cache, kept by this process for ``ttl_s`` seconds.

    Bounded: past ``max_entries`` the expired entries are dropped, and if that is not
    enough, everything (a cold start costs one Redis read per list, nothing worse).
    ``epoch`` changes on every ``forget``: a reader that started before a change must not
    keep what it read (``put(..., epoch=...)`` then does nothing).
    """

    def __init__(self, ttl_s: float, *, max_entries: int = 100_000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[Key, tuple[float, list[int]]] = {}
        self.epoch = 0

    def get(self, key: Key) -> list[int] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._monotonic():
            return None
        return entry[1]

    def put(self, key: Key, ids: list[int], *, epoch: int) -> None:
        if self._ttl_s <= 0 or epoch != self.epoch:
            return
        if len(self._entries) >= self._max_entries:
            self._prune()
        self._entries[key] = (self._monotonic() + self._ttl_s, ids)

    def forget(self, key: Key) -> None:
        self.epoch += 1
        self._entries.pop(key, None)

    def forget_all(self) -> None:
        self.epoch += 1
        self._entries = {}

    def _prune(self) -> None:
        now = self._monotonic()
        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        if len(self._entries) >= self._max_entries:
            self._entries = {}


class Membership:
    """Membership questions the chat server asks, answered from cache or community service."""

    def __init__(self, settings: Settings, cache: MembershipCache, http: ServiceClient | None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._cache = cache
        self._local = LocalLists(settings.membership_local_ttl_s, monotonic=monotonic)
        # channel -> [community], from the reverse index of channel lists: any channel
        # list change may move a channel, so it is dropped whole on one.
        self._owners = LocalLists(settings.membership_local_ttl_s, monotonic=monotonic)
        # community -> (the member list it was built from, that list as a set); the list object
        # stays the same while this process keeps it, so an identity check says it is current.
        self._member_sets: dict[int, tuple[list[int], frozenset[int]]] = {}
        self._http = http
        base = settings.community_service_url.rstrip("/")
        self._base = base if http is not None and base else ""

    @property
    def has_community_service(self) -> bool:
        return bool(self._base)

    # -- DM rooms ------------------------------------------------------------------------

    def is_room_member(self, room_id: int, user_id: int) -> bool:
        return user_id in self.room_members(room_id)

    def room_members(self, room_id: int) -> list[int]:
        return self._read(("room", room_id), self._cache.room_members, self._cache.set_room_members,
                          f"/room/feign/{room_id}/member-id", "members")

    # -- communities ---------------------------------------------------------------------

    def is_community_member(self, community_id: int, user_id: int) -> bool:
        return user_id in self.community_members(community_id)

    def community_members(self, community_id: int) -> list[int]:
        return self._read(("members", community_id), self._cache.community_members,
                          self._cache.set_community_members, f"/community/feign/{community_id}/member-id", "members")

    def community_channels(self, community_id: int) -> list[int]:
        return self._read(("channels", community_id), self._cache.community_channels,
                          self._cache.set_community_channels, f"/community/feign/{community_id}/channel-id",
                          "channels")

    def listed_channels(self, community_id: int) -> list[int] | None:
        """The community's channel list, or None when nothing lists its channels.

        The original community service has no channel-id endpoint, so "no list" is the usual
        answer there: it is kept like a list (``unlisted``), or every channel SEND would ask
        the service again.
        """
        key = ("unlisted", community_id)
        if self._local.get(key) is not None:
            return None
        epoch = self._local.epoch
        channels = self.community_channels(community_id)
        if channels or self._cache.community_channels(community_id) is not None:
            return channels
        self._local.put(key, [], epoch=epoch)
        return None

    def community_member_set(self, community_id: int) -> frozenset[int]:
        """``community_members`` as a set, for per-delivery checks; rebuilt only when the list is."""
        members = self.community_members(community_id)
        known = self._member_sets.get(community_id)
        if known is not None and known[0] is members:
            return known[1]
        if len(self._member_sets) >= MEMBER_SETS_MAX:
            self._member_sets.clear()
        as_set = frozenset(members)
        self._member_sets[community_id] = (members, as_set)
        return as_set

    def _read(self, key: Key, cached: Callable[[int], list[int] | None], store: Callable[[int, Sequence[int]], None],
              path: str, field: str) -> list[int]:
        """This process's copy, else the shared cache's, else the community service's (then cached)."""
        local = self._local.get(key)
        if local is not None:
            return local
        epoch = self._local.epoch
        ids = cached(key[1])
        if ids is None:
            ids = self._fetch_ids(path, field)
            if ids is None:
                return []  # no such thing: not cached, so it can appear later
            store(key[1], ids)
        self._local.put(key, ids, epoch=epoch)
        return ids

    # -- the change feed -----------------------------------------------------------------

    def list_changed(self, kind: str, entity_id: int) -> None:
        """A ``room``/``members``/``channels`` list was overwritten somewhere: drop our copy."""
        self._local.forget((kind, entity_id))
        if kind == "channels":
            self._local.forget(("unlisted", entity_id))
            self._owners.forget_all()

    def forget_all(self) -> None:
        """The change feed had a gap: no copy can be trusted."""
        self._local.forget_all()
        self._owners.forget_all()

    def channel_community(self, channel_id: int) -> int | None:
        """The community owning a text channel, from the reverse index of channel lists.

        The community service has no channel → community lookup, so this knows a channel
        once its community's channel list was cached (PUT, or ``community_channels``).
        Each history read and channel SEND asks, so the answer is kept like the lists; an
        unknown channel is not kept (its community may be cached any moment).
        """
        key = ("owner", channel_id)
        local = self._owners.get(key)
        if local is not None:
            return local[0]
        epoch = self._owners.epoch
        community = self._cache.channel_community(channel_id)
        if community is not None:
            self._owners.put(key, [community], epoch=epoch)
        return community

    def channel_in_community(self, channel_id: int, community_id: int) -> bool:
        """Whether ``community_id`` lists ``channel_id`` (fetching its channel list on a miss)."""
        return channel_id in self.community_channels(community_id)

    # -- overwrites from the community service (PUT endpoints) -----------------------------

    def set_room_members(self, room_id: int, user_ids: Sequence[int]) -> None:
        self._cache.set_room_members(room_id, user_ids)
        self._local.forget(("room", room_id))

    def set_community_members(self, community_id: int, user_ids: Sequence[int]) -> None:
        self._cache.set_community_members(community_id, user_ids)
        self._local.forget(("members", community_id))

    def set_community_channels(self, community_id: int, channel_ids: Sequence[int]) -> None:
        self._cache.set_community_channels(community_id, channel_ids)
        self._local.forget(("channels", community_id))
        self._local.forget(("unlisted", community_id))
        self._owners.forget_all()

    # -- a user's rooms ------------------------------------------------------------------

    def cached_communities(self, user_id: int) -> list[int]:
        """The communities the cache's reverse index lists for the user (candidates only: a
        reverse entry may outlive its list, so callers check the member list itself)."""
        entries = (parse_membership_entry(entry) for entry in self._cache.user_rooms(user_id))
        return [entry[1] for entry in entries if entry is not None and entry[0] == "community"]

    def user_rooms(self, user_id: int) -> list[str]:
        """``community/{id}`` then ``direct/{id}`` entries for the user's pushes."""
        if self._base:
            try:
                return self._fetch_room_list(user_id)
            except BackendError:
                log.warning("community service room-list failed; using the cached index")
        return self._cache.user_rooms(user_id)

    # -- community service ---------------------------------------------------------------

    def _fetch_ids(self, path: str, field: str) -> list[int] | None:
        """``result.<field>`` of a §6.4 answer; None when there is no service or no such thing."""
        if not self._base:
            return None
        assert self._http is not None
        try:
            body = self._http.get_json(self._base + path)
        except ServiceRefused:
            return None
        return _result_ids(body, field)

    def _fetch_room_list(self, user_id: int) -> list[str]:
        assert self._http is not None
        body = self._http.get_json(f"{self._base}/community/feign/room-list/{user_id}")
        if not isinstance(body, list) or not all(isinstance(e, str) for e in body):
            raise BackendUnavailable("community service sent a bad room list")
        # Entries become /topic/ suffixes: only the two known shapes may pass.
        return [entry for entry in body if parse_membership_entry(entry) is not None]


def _result_ids(body: Any, field: str) -> list[int] | None:
    if not isinstance(body, dict):
        raise BackendUnavailable("community service sent a bad answer")
    if body.get("isSuccess") is False:
        return None
    result = body.get("result")
    values = result.get(field) if isinstance(result, dict) else None
    if not isinstance(values, list):
        raise BackendUnavailable("community service sent a bad answer")
    ids = [_positive_int(value) for value in values]
    if any(value is None for value in ids):
        raise BackendUnavailable("community service sent a bad answer")
    return [value for value in ids if value is not None]


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return parse_id(value)
    return value if isinstance(value, int) and value > 0 else None
