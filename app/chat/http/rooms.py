"""Room endpoints the community service and clients call: unread counts and membership overwrites.

``POST /chat-server/message-count`` (§4.4, W-18). Body ``{"userId":5,"roomIds":[1,2,3]}``.
A user may ask only for themself (``userId`` omitted or equal to the token's id, else
403); a service (``X-Service-Token``) may ask for anyone. Every room must be a DM room of
that user, otherwise the whole request is refused with 403 and nothing is counted (the
list of rooms comes from the community service, so a foreign room is a caller bug, not
something to hide silently). Answer: a **bare** JSON array of
``{"roomId","count","localDateTime"}``, rooms with messages first, newest latest message
first, then rooms without messages in the order asked. ``count`` is the number of other
people's messages newer than the user's last-read mark (never read → all of them);
``localDateTime`` is the latest message's ``yyyyMMddHHmmssSSS`` (null when none).

``PUT /chat-server/room-user-list/{roomId}``, ``PUT /chat-server/community-user-list/{id}``
and ``PUT /chat-server/community-channel-list/{id}`` (new): the body, a JSON array of
positive ids (canonical id strings accepted, at most ``MAX_LIST_IDS``), replaces the cached list
(W-28: the body always wins).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from flask import Blueprint, Response

from app.chat.http.auth import RequestAuth
from app.chat.http.params import json_body, positive_int, positive_int_list
from app.chat.membership import Membership
from app.chat.model import RoomActivity
from app.chat.ports import ReadMarkers
from app.chat.timefmt import compact_millis
from app.destinations import parse_id
from app.errors import BadRequest, Forbidden
from app.http_envelope import json_response, success
from app.settings import Settings

__all__ = ["register_room_endpoints", "order_by_latest", "MAX_LIST_IDS"]

MAX_LIST_IDS = 100_000


def register_room_endpoints(bp: Blueprint, settings: Settings, *, auth: RequestAuth,
                               membership: Membership, markers: ReadMarkers) -> None:
    def message_count() -> Response:
        caller = auth.service_or_user()
        body = json_body(max_bytes=64 * 1024 + 24 * settings.message_count_max_rooms)
        if not isinstance(body, dict):
            raise BadRequest("body: must be an object")
        user_id = _subject(body.get("userId"), None if caller.is_service else caller.principal.user_id)
        room_ids = positive_int_list(body.get("roomIds"), "roomIds", settings.message_count_max_rooms)
        for room_id in room_ids:
            if not membership.is_room_member(room_id, user_id):
                raise Forbidden("roomIds: not a member of every room")
        activity = markers.room_activity(user_id, room_ids)
        return json_response([_count_entry(entry) for entry in order_by_latest(activity)])

    bp.add_url_rule("/message-count", "message_count", message_count, methods=["POST"])
    _overwrite_rule(bp, auth, "/room-user-list/<ident>", "room_user_list", membership.set_room_members)
    _overwrite_rule(bp, auth, "/community-user-list/<ident>", "community_user_list",
                    membership.set_community_members)
    _overwrite_rule(bp, auth, "/community-channel-list/<ident>", "community_channel_list",
                    membership.set_community_channels)


def _overwrite_rule(bp: Blueprint, auth: RequestAuth, rule: str, endpoint: str,
                    store: Callable[[int, Sequence[int]], None]) -> None:
    def overwrite(ident: str) -> Response:
        auth.service()
        entity_id = parse_id(ident)
        if entity_id is None:
            raise BadRequest("id: must be a positive integer")
        ids = positive_int_list(json_body(max_bytes=24 * MAX_LIST_IDS), "body", MAX_LIST_IDS)
        store(entity_id, ids)
        return success()

    bp.add_url_rule(rule, endpoint, overwrite, methods=["PUT"])


def _subject(sent: Any, token_user: int | None) -> int:
    """The user counted for: a service names one; a user may only name themself."""
    if token_user is None:
        return positive_int(sent, "userId")
    if sent is not None and positive_int(sent, "userId") != token_user:
        raise Forbidden("userId: not the token's user")
    return token_user


def order_by_latest(activity: Sequence[RoomActivity]) -> list[RoomActivity]:
    """Rooms with messages, newest latest first (ties keep input order), then the rest in order."""
    active = [a for a in activity if a.latest is not None]
    idle = [a for a in activity if a.latest is None]
    active.sort(key=lambda a: a.latest, reverse=True)  # type: ignore[arg-type, return-value]
    return active + idle


def _count_entry(activity: RoomActivity) -> dict[str, Any]:
    return {"roomId": activity.room_id, "count": activity.count,
            "localDateTime": compact_millis(activity.latest) if activity.latest is not None else None}
