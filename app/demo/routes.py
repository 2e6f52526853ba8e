"""The demo's HTTP side: the page and the two dev-only endpoints behind it.

- ``GET /demo``, ``/demo/demo.js``, ``/demo/demo.css``: the page (``assets/``).
- ``POST /demo/session`` ``{"userId": 9001}``: makes the demo world's memberships true (the
  user's DM rooms, the community's members and text channel), then answers a token for that
  user, signed with ``JWT_SECRET``, and what the page needs of the world. The memberships are
  written here, server-side, through the same calls the service endpoints (``PUT
  /chat-server/room-user-list``...) make, so the browser never sees ``SERVICE_TOKEN``.
- ``POST /demo/presence`` ``[9001, 9002]``: each user's location or ``offline``, read from the
  presence server's ``friends-state`` (the browser cannot reach presence's port: another origin).

Anyone who reaches ``/demo/session`` can act as any demo user: this is why the blueprint is
registered only with ``DEMO_ENABLED=on``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from flask import Blueprint, Response, request

from app.auth import mint_token
from app.demo.world import COMMUNITY_ID, TEXT_CHANNEL_ID, USERS, describe, rooms_of
from app.errors import BadRequest
from app.http_envelope import success

__all__ = ["create_demo_blueprint", "DemoMemberships", "ASSETS"]

ASSETS = Path(__file__).resolve().parent / "assets"
# The page's own files and their content types; read once when the blueprint is made.
_PAGE_FILES = {"index.html": "text/html; charset=UTF-8", "demo.js": "application/javascript; charset=UTF-8",
               "demo.css": "text/css; charset=UTF-8"}
# A demo token is short-lived: the page asks for a new one on every start.
TOKEN_LIFETIME_S = 12 * 3600


class DemoMemberships(Protocol):
    """The membership writes the service endpoints make (``app.chat.membership.Membership``)."""

    def set_room_members(self, room_id: int, user_ids: Sequence[int]) -> None: ...

    def set_community_members(self, community_id: int, user_ids: Sequence[int]) -> None: ...

    def set_community_channels(self, community_id: int, channel_ids: Sequence[int]) -> None: ...


def create_demo_blueprint(*, jwt_secret: str, memberships: DemoMemberships, script_urls: Sequence[str],
                          friends_state: Callable[[list[int]], dict[str, str]]) -> Blueprint:
    """The ``/demo`` blueprint; ``script_urls`` are the client libraries the page loads first."""
    blueprint = Blueprint("demo", __name__)
    files = {name: (ASSETS / name).read_text(encoding="utf-8") for name in _PAGE_FILES}
    page = (files["index.html"]
            .replace("<!-- client-scripts -->", "\n".join(f'<script src="{url}"></script>' for url in script_urls))
            .replace("<!-- users -->", "".join(f'<option value="{ident}">{html.escape(name)}</option>'
                                               for ident, name in USERS.items())))

    def asset(name: str) -> Callable[[], Response]:
        body = page if name == "index.html" else files[name]
        return lambda: Response(body, content_type=_PAGE_FILES[name], headers={"Cache-Control": "no-cache"})

    blueprint.add_url_rule("/demo", "page", asset("index.html"), methods=["GET"])
    blueprint.add_url_rule("/demo/demo.js", "script", asset("demo.js"), methods=["GET"])
    blueprint.add_url_rule("/demo/demo.css", "style", asset("demo.css"), methods=["GET"])

    def session() -> Response:
        body = _json()
        user_id = _demo_user(body.get("userId") if isinstance(body, dict) else None)
        _make_world_true(memberships, user_id)
        token = mint_token(jwt_secret, user_id, lifetime_s=TOKEN_LIFETIME_S)
        return success({"token": token, **describe(user_id)})

    def presence() -> Response:
        ids = _json()
        if not isinstance(ids, list) or not ids or not all(_is_demo_user(i) for i in ids):
            raise BadRequest("body: must be an array of demo user ids")
        return success(friends_state([int(i) for i in ids]))

    blueprint.add_url_rule("/demo/session", "session", session, methods=["POST"])
    blueprint.add_url_rule("/demo/presence", "presence", presence, methods=["POST"])
    return blueprint


def _make_world_true(memberships: DemoMemberships, user_id: int) -> None:
    for room in rooms_of(user_id):
        memberships.set_room_members(room.room_id, list(room.members))
    memberships.set_community_members(COMMUNITY_ID, list(USERS))
    memberships.set_community_channels(COMMUNITY_ID, [TEXT_CHANNEL_ID])


def _json() -> Any:
    return request.get_json(silent=True, force=True)


def _is_demo_user(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in USERS


def _demo_user(value: Any) -> int:
    if not _is_demo_user(value):
        raise BadRequest(f"userId: one of {', '.join(map(str, USERS))}")
    return int(value)
