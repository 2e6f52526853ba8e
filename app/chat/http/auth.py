"""Who is calling the chat HTTP API, and may they touch this room.

- User calls carry the access token in ``Authorization`` (``Bearer <jwt>`` or the raw JWT,
  as the original clients send it) or in ``access-token``; the token's ``id`` claim is the
  caller's identity (client-sent user ids are ignored, W-1).
- Service calls (community server → chat) carry ``X-Service-Token``. When
  ``settings.service_token`` is set it is compared in constant time; when it is unset (the
  embedded default) service endpoints accept any valid user token instead.
- Room access (W-3): a DM room needs membership of the room; a text channel needs
  membership of the community that owns it. Unknown rooms and channels are refused the
  same way as foreign ones (403), so the answer does not reveal which exist.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Callable

from flask import request

from app.auth import Principal, TokenVerifier, token_from_headers
from app.chat.membership import Membership
from app.destinations import RoomKind
from app.errors import AuthError, Forbidden
from app.settings import Settings

__all__ = ["Caller", "RequestAuth", "SERVICE_TOKEN_HEADER"]

SERVICE_TOKEN_HEADER = "X-Service-Token"


@dataclass(frozen=True)
class Caller:
    """A verified caller: a user (``principal``) or a trusted service (``principal`` None)."""

    principal: Principal | None

    @property
    def is_service(self) -> bool:
        return self.principal is None


class RequestAuth:
    """Authentication and room authorisation for the current Flask request."""

    def __init__(self, settings: Settings, verifier: TokenVerifier, membership: Membership) -> None:
        self._service_token = settings.service_token
        self._verifier = verifier
        self._membership = membership

    def user(self) -> Principal:
        """The user of a valid token, or ``AuthError`` (401)."""
        token = token_from_headers(request.headers.get("Authorization"), request.headers.get("access-token"))
        return self._verifier.verify(token)

    def service(self) -> Caller:
        """For service-to-service endpoints: the service token when configured, else a user token."""
        if self._service_token:
            if not self._service_token_matches():
                raise AuthError("invalid service token")
            return Caller(principal=None)
        return Caller(principal=self.user())

    def service_or_user(self) -> Caller:
        """A service when ``X-Service-Token`` is sent (and right), otherwise a user token."""
        if self._service_token and request.headers.get(SERVICE_TOKEN_HEADER) is not None:
            if not self._service_token_matches():
                raise AuthError("invalid service token")
            return Caller(principal=None)
        return Caller(principal=self.user())

    def require_room(self, kind: RoomKind, channel_id: int, user_id: int, *,
                     owner_hint: Callable[[], int | None] | None = None) -> None:
        """``Forbidden`` unless ``user_id`` may read and post in that DM room or text channel.

        ``owner_hint`` names a community that may own the channel when the cache does not
        know it (the community service has no channel → community lookup); the hint is
        only believed once that community's channel list confirms it.
        """
        if kind == "direct":
            allowed = self._membership.is_room_member(channel_id, user_id)
        else:
            community_id = self._channel_owner(channel_id, owner_hint)
            allowed = community_id is not None and self._membership.is_community_member(community_id, user_id)
        if not allowed:
            raise Forbidden()

    def _channel_owner(self, channel_id: int, owner_hint: Callable[[], int | None] | None) -> int | None:
        community_id = self._membership.channel_community(channel_id)
        if community_id is not None or owner_hint is None:
            return community_id
        hinted = owner_hint()
        if hinted is not None and self._membership.channel_in_community(channel_id, hinted):
            return hinted
        return None

    def require_channel_of(self, channel_id: int, community_id: int, user_id: int) -> None:
        """``Forbidden`` unless the channel belongs to the community and the user to both."""
        if not (self._membership.channel_in_community(channel_id, community_id)
                and self._membership.is_community_member(community_id, user_id)):
            raise Forbidden()

    def _service_token_matches(self) -> bool:
        sent = request.headers.get(SERVICE_TOKEN_HEADER, "")
        return hmac.compare_digest(sent.encode("utf-8"), self._service_token.encode("utf-8"))
