"""Who is calling the chat HTTP API, and may they touch this room.

- User calls carry the access token in ``Authorization`` (``Bearer <jwt>`` or the raw JWT,
  as the original clients send it) or in ``access-token``; the token's ``id`` claim is the
  caller's identity (client-sent user ids are ignored, W-1).
- Service endpoints (the membership PUTs, the presence callbacks; community server or
  presence → chat) never accept a user token; the service token travels in
  ``X-Service-Token`` (who counts as a service: ``app.service_auth.ServiceCallers``).
- Room access (W-3): a DM room needs membership of the room; a text channel needs
  membership of the community that owns it. Unknown rooms and channels are refused the
  same way as foreign ones (403), so the answer does not reveal which exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import request

from app.auth import Principal, TokenVerifier, token_from_headers
from app.chat.channel_scope import ChannelScope
from app.chat.membership import Membership
from app.destinations import RoomKind
from app.errors import Forbidden
from app.service_auth import SERVICE_TOKEN_HEADER, CallerFacts, ServiceCallers
from app.settings import Settings

__all__ = ["Caller", "RequestAuth", "caller_facts"]

# The headers a user token travels in; their presence marks a call as a user's.
USER_TOKEN_HEADERS = ("Authorization", "access-token")


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
        self._services = ServiceCallers.from_settings(settings)
        self._verifier = verifier
        self._membership = membership
        self.scope = ChannelScope(membership)

    def user(self) -> Principal:
        """The user of a valid token, or ``AuthError`` (401)."""
        token = token_from_headers(request.headers.get("Authorization"), request.headers.get("access-token"))
        return self._verifier.verify(token)

    def service(self) -> Caller:
        """For service-to-service endpoints: a trusted service (see :class:`ServiceCallers`)."""
        self._services.check(caller_facts())
        return Caller(principal=None)

    def service_or_user(self) -> Caller:
        """A trusted service (the right ``X-Service-Token``, or no credential from an allowed
        network while no service token is configured), otherwise the user of a valid token."""
        if self._services.is_service(caller_facts()):
            return Caller(principal=None)
        return Caller(principal=self.user())

    def require_room(self, kind: RoomKind, channel_id: int, user_id: int, *,
                     community_id: int | None = None) -> None:
        """``Forbidden`` unless ``user_id`` may see that DM room, or the messages of
        ``community_id`` in that text channel (app/chat/channel_scope.py; None: the channel's
        listed owner's)."""
        if kind == "direct":
            allowed = self._membership.is_room_member(channel_id, user_id)
        else:
            allowed = self.scope.readable(user_id, channel_id, community_id)
        if not allowed:
            raise Forbidden()

    def channel_readers(self, channel_id: int, user_id: int,
                        owner_hint: Callable[[], int | None]) -> frozenset[int]:
        """The communities whose messages in the channel ``user_id`` may read; ``Forbidden`` if none.

        Without a channel list naming the owner, the candidates are the user's communities
        as the cache's reverse index knows them and the community of the channel's newest
        message (``owner_hint``), each checked against its member list.
        """
        def candidates() -> set[int]:
            known = set(self._membership.cached_communities(user_id))
            hinted = owner_hint()
            return known | {hinted} if hinted is not None else known
        return self.scope.reader_communities(user_id, channel_id, candidates)

    def require_channel_of(self, channel_id: int, community_id: int | None, user_id: int) -> int:
        """The community a write to the channel belongs to (``ChannelScope.writer_community``)."""
        return self.scope.writer_community(user_id, channel_id, community_id)


def caller_facts() -> CallerFacts:
    """The current Flask request's :class:`CallerFacts`."""
    return CallerFacts(sent_token=request.headers.get(SERVICE_TOKEN_HEADER),
                       has_user_token=any(request.headers.get(name) for name in USER_TOKEN_HEADERS),
                       remote_addr=request.remote_addr)
