"""History endpoints: ``GET /chat-server/direct`` and ``GET /chat-server/community``.

Query: ``ch_id`` (DM room id, or text channel id for ``/community``; required), ``page``
(default 0), ``size`` (default ``settings.history_default_page_size``; above
``settings.history_max_page_size`` is refused with 400 rather than clamped, so a client
that relies on "fewer than size items means no more pages" is never misled) and the
optional stable cursor ``before=<messageId>`` (messages strictly older than that message
of this room; unknown or foreign → 400). ``ch_id`` is a canonical id, ``page`` and ``size``
plain digits, ``before`` a 24-hex id.

Catch-up: with ``after_seq=<n>`` the answer is the room's *events* numbered after ``n``
(messages, replies, files, edits and deletes, ``room_log``), oldest first, at most ``size``
log entries: ``{"events": [<the MESSAGE bodies of those events>], "next": <number to ask
after next>, "latest": <the room's last number>}``; a client reads on with
``after_seq=next`` until ``next == latest``. From further back than the log keeps: 410 with
the error envelope ("history reset: reload history"); ``n`` ahead of ``latest``: 400.

The page is the newest ``size`` messages that match, returned oldest-first, each in the
§4.4 MessageResponse shape plus ``edited``. Names and avatars are the authors' current
ones when the auth service is configured, else the ones stored with the message.
Reply parents are looked up in one query (W-19); ``parentName`` is the parent author's
name; a parent that is gone (or in another room) shows as deleted.

A text channel's page holds only the messages of the communities the reader may read there
(app/chat/channel_scope.py): its listed owner, when a channel list names one; otherwise the
reader's communities (the cache's reverse index, and the ``communityId`` stored on the
channel's newest message), each confirmed by its member list. None: 403. The catch-up skips
the events of other communities the same way.

Each message item carries ``seq``, its number in the room (null for messages stored before
sequences existed).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from flask import Blueprint, Response

from app.chat.http.auth import RequestAuth
from app.chat.http.params import query_id, query_int, query_seq, query_str
from app.chat.model import ChatMessage
from app.chat.ports import HistoryReader
from app.chat.channel_scope import ChannelScope
from app.chat.events import Decoded, decode
from app.chat.profiles import Profile, Profiles
from app.chat.room_log import RoomLog
from app.chat.timefmt import iso_local
from app.destinations import RoomKind
from app.errors import BadRequest, HistoryReset
from app.http_envelope import success
from app.settings import Settings

__all__ = ["register_history", "message_response", "DELETED_PARENT"]

DELETED_PARENT = "삭제된 메세지입니다."
MAX_PAGE_NUMBER = 1_000_000
_MESSAGE_ID = re.compile(r"[0-9a-fA-F]{24}")


def register_history(bp: Blueprint, settings: Settings, *, auth: RequestAuth, history: HistoryReader,
                     profiles: Profiles, room_log: RoomLog) -> None:
    def read(kind: RoomKind) -> Response:
        principal = auth.user()
        channel_id = query_id("ch_id")
        page = query_int("page", default=0, maximum=MAX_PAGE_NUMBER)
        size = query_int("size", default=settings.history_default_page_size, minimum=1,
                         maximum=settings.history_max_page_size)
        before = _cursor()
        after_seq = query_seq("after_seq")
        communities = None
        if kind == "direct":
            auth.require_room(kind, channel_id, principal.user_id)
        else:
            communities = auth.channel_readers(channel_id, principal.user_id,
                                               owner_hint=lambda: _stored_owner(history, channel_id))
        if after_seq is not None:
            visible = _readable_by(auth.scope, principal.user_id) if kind == "channel" else None
            return success(_catch_up(room_log, (kind, channel_id), after_seq, size, visible))
        newest_first = history.page(kind, channel_id, size=size, page=page, before_id=before, communities=communities)
        return success(_render(kind, list(reversed(newest_first)), history, profiles))

    bp.add_url_rule("/direct", "history_direct", lambda: read("direct"), methods=["GET"])
    bp.add_url_rule("/community", "history_community", lambda: read("channel"), methods=["GET"])


def _catch_up(room_log: RoomLog, room: tuple[RoomKind, int], after_seq: int, size: int,
              visible: Callable[[Decoded], bool] | None) -> dict[str, Any]:
    page = room_log.page(room, after_seq, size)
    if page.reset:
        raise HistoryReset()
    decoded = (decode(event.topic, event.value) for event in page.events)
    bodies = [json.loads(body) for event in decoded if visible is None or visible(event) for _, body in event.pushes]
    return {"events": bodies, "next": page.upto, "latest": page.latest}


def _readable_by(scope: ChannelScope, user_id: int) -> Callable[[Decoded], bool]:
    """Whether a channel's reader may see a logged event (one membership check per community)."""
    seen: dict[tuple[int, int | None], bool] = {}

    def visible(event: Decoded) -> bool:
        key = event.channel_scope
        if key is None:
            return False
        if key not in seen:
            seen[key] = scope.readable(user_id, *key)
        return seen[key]
    return visible


def _stored_owner(history: HistoryReader, channel_id: int) -> int | None:
    """The community recorded on the channel's newest message (a hint, verified by the caller)."""
    newest = history.page("channel", channel_id, size=1)
    return newest[0].community_id if newest else None


def _cursor() -> str | None:
    raw = query_str("before")
    if raw is None or raw == "":
        return None
    if not _MESSAGE_ID.fullmatch(raw):
        raise BadRequest("before: must be a message id")
    return raw.lower()


def _render(kind: RoomKind, messages: list[ChatMessage], history: HistoryReader,
            profiles: Profiles) -> list[dict[str, Any]]:
    parent_ids = {m.parent_id for m in messages if m.parent_id}
    found = history.get_many(kind, parent_ids) if parent_ids else {}
    # A parent in another room is treated as gone: its content must not leak here.
    parents = {pid: p for pid, p in found.items() if p.channel_id == messages[0].channel_id} if messages else {}
    authors = {m.user_id for m in messages} | {p.user_id for p in parents.values()}
    current = profiles.lookup_many(authors) if authors else {}
    return [message_response(m, parents, current) for m in messages]


def message_response(message: ChatMessage, parents: dict[str, ChatMessage],
                     current: dict[int, Profile]) -> dict[str, Any]:
    """protocol.md §4.4 MessageResponse (nulls present), plus ``edited``."""
    name, image = _author(message, current)
    body: dict[str, Any] = {
        "id": message.id,
        "name": name,
        "profileImage": image,
        "userId": message.user_id,
        "message": message.content,
        "thumbnail": message.thumbnail,
        "fileType": message.type,
        "type": None,
        "time": iso_local(message.created_at),
        "parentId": None,
        "parentName": None,
        "parentContent": None,
        "edited": message.edited_at is not None,
        "seq": message.seq,
    }
    if message.parent_id:
        parent = parents.get(message.parent_id)
        if parent is None or parent.community_id != message.community_id:  # another community's: not shown
            body.update(parentId=None, parentName="", parentContent=DELETED_PARENT)
        else:
            body.update(parentId=parent.id, parentName=_author(parent, current)[0], parentContent=parent.content)
    return body


def _author(message: ChatMessage, current: dict[int, Profile]) -> tuple[str | None, str | None]:
    profile = current.get(message.user_id)
    if profile is None:
        return message.name, message.profile_image
    return profile.name, profile.image
