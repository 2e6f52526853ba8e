"""Push notifications for new messages (issue 3 item 9, protocol.md §6.4, W-16, W-24).

After a message is stored and published, ``Notifier.message_stored`` spawns one greenlet
(at most ``MAX_CONCURRENT`` at a time; beyond that the notification is dropped and
counted, never queued behind the send) that:

1. lists the room's members other than the sender;
2. asks presence which of them are not viewing the room (``notify_targets``); when
   presence is down, all of them;
3. POSTs the §6.4 body to ``{NOTIFICATION_SERVICE_URL}/direct`` or ``/channel``.

Nothing here can fail or slow down a send: every error is logged and dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from gevent.pool import Pool

from app.chat.access import MembershipLookup
from app.chat.model import ChatMessage
from app.destinations import room_key
from app.errors import BackendError
from app.settings import Settings

__all__ = ["Notifier", "notification_body", "MAX_CONCURRENT"]

log = logging.getLogger(__name__)

MAX_CONCURRENT = 32


class _Http(Protocol):
    def post_json(self, url: str, body: Any) -> Any: ...


class _Targets(Protocol):
    def notify_targets(self, room_key: str, member_ids: list[int]) -> list[int]: ...


def notification_body(message: ChatMessage, targets: list[int]) -> dict[str, Any]:
    """The notification service's body; ``target`` is a Java-list string, as it parses it."""
    body: dict[str, Any] = {
        "userId": message.user_id,
        "username": message.name or "",
        "type": "text",
        "content": message.content,
    }
    if message.kind == "direct":
        body.update(roomName="DM", roomId=message.channel_id)
    else:
        body.update(channelName="CHANNEL", communityId=message.community_id, channelId=message.channel_id)
    body["target"] = "[" + ", ".join(str(t) for t in targets) + "]"
    return body


class Notifier:
    """``MessageObserver`` that sends push notifications in the background."""

    def __init__(self, settings: Settings, *, http: _Http, presence: _Targets,
                 membership: MembershipLookup, pool: Pool | None = None) -> None:
        self._base_url = settings.notification_service_url.rstrip("/")
        self._http = http
        self._presence = presence
        self._membership = membership
        self._pool = pool if pool is not None else Pool(MAX_CONCURRENT)
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self._base_url)

    def message_stored(self, message: ChatMessage) -> None:
        if not self.enabled:
            return
        if self._pool.full():
            self.dropped += 1  # a burst beyond the bound: drop rather than block the sender
            return
        self._pool.spawn(self._notify, message)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the notifications in flight (tests, shutdown)."""
        self._pool.join(timeout=timeout)

    def stop(self, timeout: float = 2.0) -> None:
        self._pool.join(timeout=timeout)
        self._pool.kill(block=True, timeout=1)

    def targets(self, message: ChatMessage) -> list[int]:
        if message.kind == "direct":
            members = self._membership.room_members(message.channel_id)
        else:
            assert message.community_id is not None
            members = self._membership.community_members(message.community_id)
        others = [m for m in members if m != message.user_id]
        if not others:
            return []
        try:
            return list(self._presence.notify_targets(room_key(message.kind, message.channel_id), others))
        except BackendError:
            return others  # presence down: better a notification too many than none

    def _notify(self, message: ChatMessage) -> None:
        try:
            targets = self.targets(message)
            if targets:
                path = "direct" if message.kind == "direct" else "channel"
                self._http.post_json(f"{self._base_url}/{path}", notification_body(message, targets))
        except Exception:  # noqa: BLE001 - notifications never fail a send
            log.warning("push notification failed", exc_info=True)
