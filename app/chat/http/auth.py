"""Who is calling the chat HTTP API, and may they touch this room.

- User calls carry the access token in ``Authorization`` (``Bearer <jwt>`` or the raw JWT,
  as the original clients send it) or in ``access-token``; the token's ``id`` claim is the
  caller's identity (client-sent user ids are ignored, W-1).
- Service endpoints (the membership PUTs, the presence callbacks; community server or
  presence → chat) never accept a user token (:class:`ServiceCallers`). When
  ``settings.service_token`` is set, a caller must send it in ``X-Service-Token``
  (compared in constant time); when it is unset, only callers whose address is in
  ``settings.service_allowed_networks`` (loopback by default) are served, as the original
  community server calls without any credential (protocol.md §6.2).
- Room access (W-3): a DM room needs membership of the room; a text channel needs
  membership of the community that owns it. Unknown rooms and channels are refused the
  same way as foreign ones (403), so the answer does not reveal which exist.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Callable, Sequence

from flask import request

from app.auth import Principal, TokenVerifier, token_from_headers
from app.chat.channel_scope import ChannelScope
from app.chat.membership import Membership
from app.destinations import RoomKind
from app.errors import AuthError, Forbidden
from app.settings import Settings

__all__ = ["Caller", "CallerFacts", "RequestAuth", "ServiceCallers", "SERVICE_TOKEN_HEADER", "caller_facts",
           "parse_networks", "address_in"]

SERVICE_TOKEN_HEADER = "X-Service-Token"
# The headers a user token travels in; their presence marks a call as a user's.
USER_TOKEN_HEADERS = ("Authorization", "access-token")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``127.0.0.0/8, ::1/128, 10.1.2.3``: a comma-separated CIDR list (a bare address is a /32
    or /128). Raises ``ValueError`` naming the entry it cannot read."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"SERVICE_ALLOWED_NETWORKS: not a network: {entry!r}") from None
    return tuple(networks)


def address_in(address: str | None, networks: Sequence[Network]) -> bool:
    """Whether a peer address (as WSGI's ``REMOTE_ADDR`` gives it) lies in one of ``networks``.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, a dual-stack listener) counts as its
    IPv4 address; anything that is not an address is outside every network.
    """
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in networks)


@dataclass(frozen=True)
class CallerFacts:
    """What decides whether a request is a trusted service's: read from the request by
    :func:`caller_facts`, given by hand in tests."""

    sent_token: str | None  # X-Service-Token, None when absent
    has_user_token: bool    # an Authorization or access-token header
    remote_addr: str | None


class ServiceCallers:
    """Who may call a service-to-service endpoint (pure: the request's facts come as arguments).

    - A call that carries a user token is refused (403) unless it also carries the right
      service token: user tokens never open a service endpoint.
    - ``token`` configured: the caller must send it (else 401), from any address.
    - No token configured: the caller's address must be in ``networks`` (else 403).
    """

    def __init__(self, token: str, networks: Sequence[Network]) -> None:
        self._token = token.encode("utf-8")
        self._networks = tuple(networks)

    def check(self, facts: CallerFacts) -> None:
        """Return if the caller is a trusted service; raise ``AuthError`` or ``Forbidden``."""
        if self._token and facts.sent_token is not None and self._matches(facts.sent_token):
            return
        if facts.has_user_token:
            raise Forbidden("service endpoint: user tokens are not accepted")
        if self._token:
            raise AuthError("invalid service token")
        if not address_in(facts.remote_addr, self._networks):
            raise Forbidden("service endpoint: caller not allowed")

    def is_service(self, facts: CallerFacts) -> bool:
        """For endpoints users may call too: is this a service call? A wrong service token
        raises ``AuthError``; a call with a user token, or from outside the allowed networks
        without the service token, is a user's."""
        if facts.sent_token is not None and self._token:
            if not self._matches(facts.sent_token):
                raise AuthError("invalid service token")
            return True
        return not self._token and not facts.has_user_token and address_in(facts.remote_addr, self._networks)

    def _matches(self, sent: str) -> bool:
        return hmac.compare_digest(sent.encode("utf-8"), self._token)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServiceCallers":
        return cls(settings.service_token, parse_networks(settings.service_allowed_networks))


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
