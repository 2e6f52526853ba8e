"""The chat server's HTTP API under ``/chat-server`` (protocol.md §6.2), as one Flask blueprint.

``create_blueprint(...)`` assembles the routes of:

- ``app.chat.http.history``: ``GET /direct``, ``GET /community`` (message history);
- ``app.chat.http.files``: ``POST /file``, ``POST /channel/file``, ``GET /file/<key>``;
- ``app.chat.http.rooms``: ``POST /message-count`` and the membership ``PUT`` lists.

Every route authenticates (``app.chat.http.auth``), checks membership, validates its input
strictly (``app.chat.http.params``), and answers with the §6.1 wrapper; every error, including
Werkzeug's own (413 of an oversized body, 405), is the JSON envelope of ``app.http_envelope``,
registered on the app.
"""

from __future__ import annotations

from flask import Blueprint

from app.auth import TokenVerifier
from app.chat.handlers import Messaging
from app.chat.http.auth import RequestAuth
from app.chat.http.files import register_files
from app.chat.http.history import register_history
from app.chat.http.rooms import register_room_endpoints
from app.chat.membership import Membership
from app.chat.ports import FileStore, HistoryReader, ReadMarkers
from app.chat.profiles import Profiles
from app.chat.room_log import RoomLog
from app.settings import Settings

__all__ = ["create_blueprint", "URL_PREFIX"]

URL_PREFIX = "/chat-server"


def create_blueprint(settings: Settings, *, membership: Membership, profiles: Profiles, history: HistoryReader,
                     markers: ReadMarkers, files: FileStore, messaging: Messaging, room_log: RoomLog,
                     verifier: TokenVerifier) -> Blueprint:
    """The ``/chat-server`` blueprint, wired to the given services."""
    bp = Blueprint("chat_http_api", __name__, url_prefix=URL_PREFIX)
    auth = RequestAuth(settings, verifier, membership)
    register_history(bp, settings, auth=auth, history=history, profiles=profiles, room_log=room_log)
    register_files(bp, settings, auth=auth, files=files, messaging=messaging, profiles=profiles)
    register_room_endpoints(bp, settings, auth=auth, membership=membership, markers=markers)
    return bp
