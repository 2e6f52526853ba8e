"""The service endpoints the presence server calls back on (protocol.md §6.2, §7.3, §8).

- ``POST /chat-server/signaling-list-community`` ``{"type":"out","communityId":"3","channelId":"c-12","ids":["9"]}``
  → ``state-topic`` ``exit-community`` → every node pushes the body to ``/topic/community/3``.
- ``POST /chat-server/signaling-list-direct`` ``{"type":"out","channelId":"17","ids":["5"]}``
  → ``exit-room`` → ``/topic/direct/17`` (the reference's broken DM branch, W-20, fixed).
- ``POST /chat-server/presence-offline`` ``{"userId":5,"location":"c-12"}`` (a dead node's
  user lost their last session) → last-read mark of the location, ``disconnect`` pushes.

All three answer 200 with an empty body once the event is published.

Who may call: trusted services only (``app.service_auth.ServiceCallers``): the
``SERVICE_TOKEN`` in ``X-Service-Token`` when one is configured (``make run`` generates one
and gives it to presence), otherwise callers in ``SERVICE_ALLOWED_NETWORKS`` (loopback by
default). A user token never opens these endpoints (403). A proxy in front of the server
makes every request look local, so a deployment behind one must set ``SERVICE_TOKEN``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Protocol

from flask import Blueprint, Response

from app.chat import events
from app.chat.http.auth import caller_facts
from app.chat.http.params import json_body
from app.chat.model import TOPICS
from app.chat.ports import EventBus
from app.destinations import (is_text_location, parse_id, parse_room_key, parse_voice_location,
                              room_key)
from app.errors import BadRequest
from app.service_auth import ServiceCallers
from app.settings import Settings

__all__ = ["create_service_blueprint", "OfflineHandler"]

MAX_IDS = 10_000
# The largest callback body: MAX_IDS ids and the other fields, with room to spare.
MAX_BODY_BYTES = 256 * 1024
_TYPE = re.compile(r"[a-z-]{1,32}")


class OfflineHandler(Protocol):
    def user_went_offline(self, user_id: int, location: str | None) -> None: ...


def create_service_blueprint(settings: Settings, *, bus: EventBus, offline: OfflineHandler) -> Blueprint:
    """The blueprint of the three presence → chat endpoints."""
    blueprint = Blueprint("chat_service_api", __name__)
    services = ServiceCallers.from_settings(settings)

    def endpoint(path: str, handle: Callable[[dict[str, Any]], None]) -> None:
        def view() -> Response:
            services.check(caller_facts())
            handle(_json_object())
            return Response(status=200)
        view.__name__ = path.replace("-", "_")
        blueprint.add_url_rule(f"/chat-server/{path}", view_func=view, methods=["POST"])

    endpoint("signaling-list-community", lambda body: _publish_exit_community(bus, body))
    endpoint("signaling-list-direct", lambda body: _publish_exit_room(bus, body))
    endpoint("presence-offline", lambda body: offline.user_went_offline(*_offline_args(body)))
    return blueprint


# ---------------------------------------------------------------- body validation

def _json_object() -> dict[str, Any]:
    # Any content type: a caller that forgets the JSON content type still means JSON.
    body = json_body(max_bytes=MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise BadRequest("body: must be a JSON object")
    return body


def _id(body: dict[str, Any], field: str) -> int:
    """A canonical id sent as a JSON number or a string."""
    value = body.get(field)
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    ident = parse_id(text)
    if ident is None:
        raise BadRequest(f"{field}: must be a positive integer")
    return ident


def _ids(body: dict[str, Any]) -> list[str]:
    values = body.get("ids")
    if values is None:
        return []
    if not isinstance(values, list) or len(values) > MAX_IDS:
        raise BadRequest("ids: must be a list of user ids")
    return [str(_id({"ids": value}, "ids")) for value in values]


def _exit_type(body: dict[str, Any]) -> str:
    value = body.get("type", "out")
    if not isinstance(value, str) or not _TYPE.fullmatch(value):
        raise BadRequest("type: must be a short word")
    return value


def _publish_exit_community(bus: EventBus, body: dict[str, Any]) -> None:
    community_id = _id(body, "communityId")
    channel = body.get("channelId")
    key = parse_room_key(channel) if isinstance(channel, str) else None
    if key is None or key.kind != "channel":
        raise BadRequest("channelId: must be c-<voiceChannelId>")
    record = events.exit_community_record(community_id, room_key("channel", key.ident), _ids(body),
                                          _exit_type(body))
    bus.publish(TOPICS["state"], events.record_key(community_id), record)


def _publish_exit_room(bus: EventBus, body: dict[str, Any]) -> None:
    room_id = _exit_room_id(body.get("channelId"))
    record = events.exit_room_record(room_id, _ids(body), _exit_type(body))
    bus.publish(TOPICS["state"], events.record_key(room_id), record)


def _exit_room_id(channel: Any) -> int:
    """The DM room of ``r-17`` or of a bare ``17`` (both are sent)."""
    key = parse_room_key(channel) if isinstance(channel, str) else None
    if key is not None and key.kind == "direct":
        return key.ident
    return _id({"channelId": channel}, "channelId")


def _offline_args(body: dict[str, Any]) -> tuple[int, str | None]:
    user_id = _id(body, "userId")
    location = body.get("location")
    if location is not None and not _is_presence_location(location):
        raise BadRequest("location: must be a presence location")
    return user_id, location


def _is_presence_location(location: Any) -> bool:
    """``home``, a room key or a voice location, as presence records them."""
    return isinstance(location, str) and (is_text_location(location) or parse_voice_location(location) is not None)
