"""Authors' current names and avatars, from the auth service, cached in Redis.

``POST {AUTH_SERVICE_URL}/find-id-list`` with a JSON array of ids answers
``{"isSuccess":..,"result":{"2":{"id":2,"name":"…","image":"<url or null>",…}}}``
(protocol.md §6.4). Found profiles are cached under ``PF{userId}`` for
``settings.profile_ttl_s``; ids the service does not know are simply absent.

Profiles are decoration, not authority: without an auth service every lookup is empty, and
when the service or the cache fails the lookup returns what it has, so history and uploads
keep working with the names stored in the messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

from app.chat.ports import ServiceClient
from app.destinations import parse_id
from app.errors import BackendError
from app.settings import Settings

__all__ = ["Profile", "Profiles", "JsonCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    name: str | None
    image: str | None


class JsonCache(Protocol):
    """What Profiles needs from the cache (``RedisMembershipCache`` provides it)."""

    def get_many_json(self, keys: Sequence[str]) -> list[Any | None]: ...

    def set_many_json(self, values: dict[str, Any], ttl_s: int) -> None: ...


class Profiles:
    """``lookup``/``lookup_many``: current author profiles, or nothing when unknown."""

    def __init__(self, settings: Settings, redis_cache: JsonCache, http: ServiceClient | None) -> None:
        base = settings.auth_service_url.rstrip("/")
        self._url = f"{base}/find-id-list" if base and http is not None else ""
        self._cache = redis_cache
        self._http = http
        self._ttl_s = settings.profile_ttl_s

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    def lookup(self, user_id: int) -> Profile | None:
        return self.lookup_many([user_id]).get(user_id)

    def lookup_many(self, ids: Iterable[int]) -> dict[int, Profile]:
        if not self._url:
            return {}
        wanted = list(dict.fromkeys(int(i) for i in ids))
        found = self._cached(wanted)
        missing = [user_id for user_id in wanted if user_id not in found]
        if missing:
            fetched = self._fetch(missing)
            self._store(fetched)
            found.update(fetched)
        return found

    def _cached(self, ids: list[int]) -> dict[int, Profile]:
        try:
            values = self._cache.get_many_json([_key(user_id) for user_id in ids])
        except BackendError:
            log.warning("profile cache unavailable")
            return {}
        return {user_id: profile for user_id, value in zip(ids, values)
                if (profile := _profile(value)) is not None}

    def _fetch(self, ids: list[int]) -> dict[int, Profile]:
        assert self._http is not None
        try:
            body = self._http.post_json(self._url, ids)
        except BackendError:
            log.warning("auth service find-id-list failed; using stored names")
            return {}
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            return {}
        wanted = set(ids)
        profiles = {user_id: profile for key, value in result.items()
                    if (user_id := parse_id(str(key))) is not None and (profile := _profile(value)) is not None}
        return {user_id: p for user_id, p in profiles.items() if user_id in wanted}

    def _store(self, profiles: dict[int, Profile]) -> None:
        try:
            self._cache.set_many_json(
                {_key(user_id): {"name": p.name, "image": p.image} for user_id, p in profiles.items()},
                self._ttl_s)
        except BackendError:
            log.warning("profile cache unavailable")


def _key(user_id: int) -> str:
    return f"PF{user_id}"


def _profile(value: Any) -> Profile | None:
    if not isinstance(value, dict):
        return None
    name, image = value.get("name"), value.get("image")
    return Profile(name=name if isinstance(name, str) else None,
                   image=image if isinstance(image, str) else None)
